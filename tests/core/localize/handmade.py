"""Films made without koa's phantoms: pydicom datasets written by hand around any array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)


def write_dicom_film(
    path: Path,
    pixels: npt.NDArray[np.uint16],
    spacing_mm: float,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    sop_instance_uid: str | None = None,
) -> str:
    """Write ``pixels`` as a minimal DX For Presentation file; return its SOPInstanceUID."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID = "HANDMADE"
    ds.Modality = "DX"
    ds.BodyPartExamined = "KNEE"
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    ds.PixelRepresentation = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)
