"""The Secondary Capture of one film's overlay, for viewers that show no structured report.

The picture carries its annotations in its pixels, so (0028,0301) BurnedInAnnotation is
YES; (0008,0008) ImageType is ``DERIVED\\SECONDARY\\KOA`` and (0008,0070) Manufacturer
``koa``, the marks by which koa's own manifest refuses it should it come back as input.

The overlay is JPEG baseline (quality 95) unless asked for lossless: a 1,000 px overlay is
2.7 MB uncompressed and ~140 KB as JPEG, for the same 8 ms to build and encode, and every
byte of it is written twice with fsync (kept, then the outbox) or sent over the network to
the PACS; writing the uncompressed one cost more than building it. It is a picture of the
model's output for viewers without an SR, never a copy of the film to read from, and it
says it was compressed lossily ((0028,2110) LossyImageCompression 01, with its ratio).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from koa_core.delivery import uids
from koa_core.delivery.findings import FilmFindings
from koa_core.delivery.report import MANUFACTURER, evidence_header
from koa_core.errors import ResultBuildError

SC_SERIES_NUMBER = 9902
SC_SERIES_DESCRIPTION = "koa overlay (AI, unverified)"
IMAGE_TYPE = ("DERIVED", "SECONDARY", "KOA")
DERIVATION = "koa overlay: KL grade, P(KOA), prediction set and heatmap per knee"
JPEG_METHOD = "ISO_10918_1"


def build_capture(film: FilmFindings, *, lossless: bool = False) -> hd.sc.SCImage:
    """The Secondary Capture of ``film.overlay`` in the film's study, its own series.

    Args:
        film: The film's findings and overlay.
        lossless: Keep the overlay uncompressed RGB instead of JPEG baseline.

    Raises:
        ResultBuildError: An overlay that is not ``(rows, cols, 3)`` uint8, or a source
            header highdicom cannot use.
    """
    overlay = film.overlay
    if overlay.ndim != 3 or overlay.shape[2] != 3 or overlay.dtype != np.uint8:
        raise ResultBuildError(f"overlay must be (rows, cols, 3) uint8, got {overlay.shape}")
    source = evidence_header(film.source)
    version = film.algorithm.model_version
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            source,
            pixel_array=np.ascontiguousarray(overlay),
            photometric_interpretation="RGB" if lossless else "YBR_FULL_422",
            transfer_syntax_uid=ExplicitVRLittleEndian if lossless else JPEGBaseline8Bit,
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=uids.series_uid(uids.SC, source.StudyInstanceUID, version),
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=uids.instance_uid(uids.SC, source.SOPInstanceUID, version),
            instance_number=int(source.get("InstanceNumber") or 1),
            manufacturer=MANUFACTURER,
            patient_orientation=_orientation(source),
            series_description=SC_SERIES_DESCRIPTION,
            software_versions=film.algorithm.version,
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise ResultBuildError(f"SC for {source.get('SOPInstanceUID')}: {exc}") from exc
    sc.ImageType = list(IMAGE_TYPE)
    sc.BurnedInAnnotation = "YES"
    sc.ImageLaterality = _laterality(film)
    sc.DerivationDescription = DERIVATION
    sc.SourceImageSequence = [_source_reference(source)]
    if "BodyPartExamined" in source:
        sc.BodyPartExamined = source.BodyPartExamined
    if not lossless:
        _mark_lossy(sc, overlay.nbytes)
    return sc


def _mark_lossy(sc: hd.sc.SCImage, raw_bytes: int) -> None:
    """(0028,2110)-(0028,2114): lossy JPEG, at the ratio of the raw overlay to its frame."""
    sc.LossyImageCompression = "01"
    sc.LossyImageCompressionRatio = f"{raw_bytes / len(sc.PixelData):.2f}"
    sc.LossyImageCompressionMethod = JPEG_METHOD


def _orientation(source: Dataset) -> tuple[str, str]:
    """(0020,0020) PatientOrientation of the film; a PA knee film's ``L\\F`` if absent."""
    values = source.get("PatientOrientation")
    if values is not None and len(values) == 2 and all(values):
        return str(values[0]), str(values[1])
    return "L", "F"


def _laterality(film: FilmFindings) -> str:
    """(0020,0062) ImageLaterality: the one side shown, ``B`` for both, ``U`` for none."""
    sides = {knee.side for knee in film.knees}
    return sides.pop() if len(sides) == 1 else ("B" if sides else "U")


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item
