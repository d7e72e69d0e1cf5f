"""Phantom radiographs as DICOM DX "For Presentation" files in several transfer syntaxes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

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


def knee_dataset(
    image: KneeImage, *, key: Sequence[object], patient_id: str, study_date: date
) -> Dataset:
    """A DX "For Presentation" dataset holding ``image``; every UID derives from ``key``.

    The KL grade goes into (0020,4000) ImageComments as ``KL=<grade>``.
    """
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
    ds.ViewPosition = "PA"
    ds.ImageLaterality = image.laterality
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Manufacturer = "koa-phantom"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [image.spacing_mm, image.spacing_mm]
    ds.ImageComments = f"KL={image.grade}"
    ds.set_pixel_data(
        image.pixels, image.photometric, image.bits_stored, generate_instance_uid=False
    )
    ds.PixelRepresentation = 0
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
