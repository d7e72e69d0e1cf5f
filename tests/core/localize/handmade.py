"""Films made without koa's phantoms: pydicom datasets written by hand around any array."""

from __future__ import annotations

import csv
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

from koa_core.phantom import render_knee


def write_dicom_film(
    path: Path,
    pixels: npt.NDArray[np.uint16],
    spacing_mm: float,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    sop_instance_uid: str | None = None,
    laterality: str | None = None,
    view: str | None = None,
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
    if laterality is not None:
        ds.ImageLaterality = laterality
    if view is not None:
        ds.ViewPosition = view
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    ds.PixelRepresentation = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def write_handmade_set(root: Path, films: int, seed: int) -> tuple[Path, Path]:
    """Films koa's film writer never made, and their joint table; (scans folder, table).

    Single knees pasted at random places on a larger detector, 16-bit, every other one
    MONOCHROME1, written with pydicom, and a hand-written table naming them by
    SOPInstanceUID (plus columns the reader ignores); the last film has no knee on it.
    """
    rng = np.random.default_rng(seed)
    scans = root / "scans"
    rows = []
    for index in range(films):
        side = "RL"[index % 2]
        knee = render_knee(
            index % 5, side, seed=seed * 1000 + index, rows=400, columns=400, spacing_mm=0.5
        )
        film = np.full((700, 560), 200.0)
        top, left = int(rng.integers(0, 300)), int(rng.integers(0, 160))
        film[top : top + 400, left : left + 400] = knee.bone_bright() * 16.0
        photometric = "MONOCHROME1" if index % 2 else "MONOCHROME2"
        stored = 65535.0 - film if photometric == "MONOCHROME1" else film
        uid = write_dicom_film(
            scans / f"scan-{seed}-{index}.dcm",
            np.clip(stored, 0, 65535).astype(np.uint16),
            0.5,
            photometric=photometric,
            bits_stored=16,
            laterality=side,
        )
        rows.append([uid, side, left + 200.0, top + 200.0, index % 5, "hand-made"])
    # A film with no knee on it (an empty row): a negative for training.
    blank = np.full((600, 500), 3000, np.uint16)
    uid = write_dicom_film(scans / f"blank-{seed}.dcm", blank, 0.5, bits_stored=16)
    rows.append([uid, "", "", "", "", "no knee"])
    table = root / "joints.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sop_instance_uid", "side", "joint_x", "joint_y", "kl_grade", "note"])
        writer.writerows(rows)
    return scans, table
