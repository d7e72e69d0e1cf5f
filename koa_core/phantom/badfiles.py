"""Bad and hostile files, each with the reason koa must give when it quarantines it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from koa_core.errors import (
    ColourImageError,
    DimensionsOutOfRangeError,
    EmptyFileError,
    MultiFrameError,
    NotDicomError,
    TruncatedFileError,
)
from koa_core.phantom.anatomy import render_knee, rng_for
from koa_core.phantom.dicom import knee_dataset, save_dicom

BAD_KINDS = (
    "truncated",
    "zero_byte",
    "not_dicom",
    "colour",
    "wrong_body_part",
    "wrong_modality",
    "duplicate_uid",
    "absurd_dimensions",
    "multi_frame",
    "derived",
)
"""Kinds in the order ``write_bad_files`` cycles through them."""

EXPECTED_REASONS = {
    "truncated": TruncatedFileError.reason,
    "zero_byte": EmptyFileError.reason,
    "not_dicom": NotDicomError.reason,
    "colour": ColourImageError.reason,
    "wrong_body_part": "body_part",
    "wrong_modality": "modality",
    "duplicate_uid": "duplicate_uid",
    "absurd_dimensions": DimensionsOutOfRangeError.reason,
    "multi_frame": MultiFrameError.reason,
    "derived": "derived",
}
"""A reader error's ``reason`` for files that cannot be read; a data-check name for files
that read fine but must be quarantined by the checks."""

_SIDE_PX = 384
_SPACING_MM = 0.6
_STUDY_DATE = date(2020, 1, 1)


@dataclass(frozen=True)
class BadFileRecord:
    """One bad file: where it is, what is wrong with it, and the reason koa must report."""

    path: Path
    kind: str
    expected_reason: str


def _knee(seed: int, index: int, tag: str = "") -> Dataset:
    """A small, valid knee DX dataset whose UIDs derive from ``(seed, index, tag)``."""
    image = render_knee(
        int(rng_for(seed, index).integers(4)),
        "R",
        seed + index,
        rows=_SIDE_PX,
        columns=_SIDE_PX,
        spacing_mm=_SPACING_MM,
    )
    return knee_dataset(
        image,
        key=("bad", seed, index, tag),
        patient_id=f"KOA-BAD-{index:04d}",
        study_date=_STUDY_DATE,
    )


def _truncated(path: Path, ds: Dataset) -> list[Path]:
    save_dicom(ds, path)
    data = path.read_bytes()
    # Cut halfway through (7FE0,0010) PixelData: the header parses, the pixels do not.
    path.write_bytes(data[: len(data) - len(ds.PixelData) // 2])
    return [path]


def _zero_byte(path: Path, ds: Dataset) -> list[Path]:
    path.write_bytes(b"")
    return [path]


def _not_dicom(path: Path, ds: Dataset) -> list[Path]:
    path.write_text("patient,knee,grade\nthis is a CSV export, not a DICOM file\n")
    return [path]


def _colour(path: Path, ds: Dataset) -> list[Path]:
    grey = (ds.pixel_array >> (ds.BitsStored - 8)).astype(np.uint8)
    ds.set_pixel_data(
        np.stack([grey, grey, grey // 2], axis=-1), "RGB", 8, generate_instance_uid=False
    )
    save_dicom(ds, path)
    return [path]


def _wrong_body_part(path: Path, ds: Dataset) -> list[Path]:
    ds.BodyPartExamined = "CHEST"
    save_dicom(ds, path)
    return [path]


def _wrong_modality(path: Path, ds: Dataset) -> list[Path]:
    ds.Modality = "CT"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    save_dicom(ds, path)
    return [path]


def _duplicate_uid(path: Path, ds: Dataset) -> list[Path]:
    """A re-sent image: two byte-identical files, so both carry the same SOP Instance UID."""
    original = path.with_name(path.stem + "-original.dcm")
    save_dicom(ds, original)
    shutil.copyfile(original, path)
    return [original, path]


def _absurd_dimensions(path: Path, ds: Dataset) -> list[Path]:
    ds.Rows = ds.Columns = 65535
    ds.PixelData = bytes(64)
    save_dicom(ds, path)
    return [path]


def _multi_frame(path: Path, ds: Dataset) -> list[Path]:
    frames = np.stack([ds.pixel_array] * 3)
    ds.set_pixel_data(
        frames, ds.PhotometricInterpretation, ds.BitsStored, generate_instance_uid=False
    )
    save_dicom(ds, path)
    return [path]


def _derived(path: Path, ds: Dataset) -> list[Path]:
    ds.ImageType = ["DERIVED", "SECONDARY"]
    save_dicom(ds, path)
    return [path]


_WRITERS: dict[str, Callable[[Path, Dataset], list[Path]]] = {
    "truncated": _truncated,
    "zero_byte": _zero_byte,
    "not_dicom": _not_dicom,
    "colour": _colour,
    "wrong_body_part": _wrong_body_part,
    "wrong_modality": _wrong_modality,
    "duplicate_uid": _duplicate_uid,
    "absurd_dimensions": _absurd_dimensions,
    "multi_frame": _multi_frame,
    "derived": _derived,
}


def write_bad_files(out: Path, k: int, seed: int) -> list[BadFileRecord]:
    """Write ``k`` bad files into ``out``, cycling through ``BAD_KINDS``.

    Every file is named ``bad-<index>-<kind>.dcm``, whatever its content. The
    ``duplicate_uid`` kind writes a pair (an original and its copy), so both members of
    the duplicate are returned and the list can hold more than ``k`` records.
    """
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(k):
        kind = BAD_KINDS[index % len(BAD_KINDS)]
        path = out / f"bad-{index:03d}-{kind}.dcm"
        for written in _WRITERS[kind](path, _knee(seed, index)):
            records.append(BadFileRecord(written, kind, EXPECTED_REASONS[kind]))
    return records
