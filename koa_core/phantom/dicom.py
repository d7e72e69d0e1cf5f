"""Phantom radiographs as DICOM DX "For Presentation" files in several transfer syntaxes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from koa_core.phantom.anatomy import KneeImage
from koa_core.phantom.films import Film

TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg2000": JPEG2000Lossless,
}
_COMPRESSED = ("rle", "jpeg2000")


def _uid(*parts: object) -> str:
    """A UID derived from ``parts`` (same parts, same UID), under pydicom's root."""
    return str(generate_uid(entropy_srcs=["koa-phantom", *(str(part) for part in parts)]))


def _dx_dataset(key: Sequence[object], patient_id: str, study_date: date) -> Dataset:
    """The DX "For Presentation" header common to every phantom; UIDs derive from ``key``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = _uid(*key, "sop")
    ds.StudyInstanceUID = _uid(*key, "study")
    ds.SeriesInstanceUID = _uid(*key, "series")
    ds.PatientID = patient_id
    ds.PatientName = f"PHANTOM^{patient_id}"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "080000"
    ds.AccessionNumber = patient_id[-16:]
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.Modality = "DX"
    ds.BodyPartExamined = "KNEE"
    return ds


def _set_pixels(
    ds: Dataset, pixels: npt.NDArray[np.uint16], spacing_mm: float, photometric: str, bits: int
) -> None:
    """(7FE0,0010) PixelData with its image pixel module and (0028,0030) PixelSpacing."""
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Manufacturer = "koa-phantom"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [spacing_mm, spacing_mm]
    ds.set_pixel_data(pixels, photometric, bits, generate_instance_uid=False)
    ds.PixelRepresentation = 0


def knee_dataset(
    image: KneeImage, *, key: Sequence[object], patient_id: str, study_date: date
) -> Dataset:
    """A DX "For Presentation" dataset holding ``image``; every UID derives from ``key``.

    The KL grade goes into (0020,4000) ImageComments as ``KL=<grade>``.
    """
    ds = _dx_dataset(key, patient_id, study_date)
    ds.ViewPosition = "PA"
    ds.ImageLaterality = image.laterality
    ds.ImageComments = f"KL={image.grade}"
    _set_pixels(ds, image.pixels, image.spacing_mm, image.photometric, image.bits_stored)
    return ds


FILM_DESCRIPTIONS = {
    "bilateral": "XR KNEE BILAT STANDING",
    "R": "XR KNEE RIGHT 1V",
    "L": "XR KNEE LEFT 1V",
}


def film_dataset(
    film: Film, *, key: Sequence[object], patient_id: str, study_date: date
) -> Dataset:
    """A DX dataset holding a whole ``film``; every UID derives from ``key``.

    (0018,5101) ViewPosition is ``PA`` (``LL`` for a lateral film), (0020,0062)
    ImageLaterality ``B`` on a bilateral film, else the knee's side. The readers' labels
    go into (0020,4000) ImageComments as ``KL_R=<grade> KL_L=<grade>``.
    """
    ds = _dx_dataset(key, patient_id, study_date)
    ds.ViewPosition = "LL" if film.kind == "lateral" else "PA"
    ds.ImageLaterality = film.image_laterality
    side = film.image_laterality
    description = FILM_DESCRIPTIONS["bilateral" if side == "B" else side]
    ds.StudyDescription = ds.SeriesDescription = (
        description.replace("1V", "LAT") if film.kind == "lateral" else description
    )
    if film.knees:
        ds.ImageComments = " ".join(f"KL_{knee.side}={knee.label}" for knee in film.knees)
    _set_pixels(ds, film.pixels, film.spacing_mm, film.photometric, film.bits_stored)
    return ds


def save_dicom(ds: Dataset, path: Path, transfer_syntax: str = "explicit") -> None:
    """Write ``ds`` as a DICOM Part 10 file in one of ``TRANSFER_SYNTAXES``."""
    uid = TRANSFER_SYNTAXES[transfer_syntax]
    if transfer_syntax in _COMPRESSED:
        ds.compress(uid, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = uid
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
