"""Which files a KL-graded dataset holds, their grades and splits: image folders or a labels table.

Two layouts are accepted:

* **Image folder** (the public KL-graded knee sets, e.g. Kaggle's "Knee Osteoarthritis
  Dataset with Severity Grading"): ``ROOT/{train,val,test}/{0..4}/*.png|jpg|jpeg``. Any
  size, 8/16-bit grey or RGB with equal channels. Other top-level folders (such as
  ``auto_test``) are ignored unless named in ``splits``. Without ``val`` a deterministic
  15 % of ``train`` (by file-path hash) becomes the validation split.
* **Labels table**: ``ROOT/labels.csv`` or ``ROOT/labels.parquet`` (or an explicit path)
  with a ``kl_grade`` column (integer 0-4) and either ``file`` (path relative to ROOT) or
  ``sop_instance_uid`` (matched to the DICOM files under ROOT). An optional ``split``
  column (train/val/test) is used as given; otherwise rows are split 70/15/15 by a hash
  of the patient (``patient_id`` column or DICOM (0010,0020) PatientID), else the study
  (``study_instance_uid`` or (0020,000D) StudyInstanceUID), else the file path, so one
  patient's knees never straddle train and test.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from koa_core.errors import DatasetError
from koa_core.schema import GRADES
from koa_core.storage.files import file_sha256

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
TABLE_NAMES = ("labels.csv", "labels.parquet")
VAL_SHARE = 0.15
TEST_SHARE = 0.15
GROUP_COLUMNS = ("patient_id", "study_instance_uid")


@dataclass(frozen=True)
class LabelledFile:
    """One labelled image: ``split`` is ``None`` until assigned, ``group`` its patient/study."""

    path: Path
    relpath: str
    label: int
    split: str | None = None
    group: str | None = None


def _parse_grade(value: object, where: str) -> int:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise DatasetError(f"{where}: KL grade {value!r} is not an integer 0-4")
    if int(number) not in GRADES:
        raise DatasetError(f"{where}: KL grade {value!r} is outside 0-4")
    return int(number)


def _cell(row: pd.Series, column: str) -> str | None:
    """A table cell as stripped text; ``None`` for a missing column, NA or an empty string."""
    value = row.get(column)
    if value is None or pd.isna(value):
        return None
    return str(value).strip() or None


def list_image_folder(root: Path, splits: Sequence[str] = SPLITS) -> list[LabelledFile]:
    """Labelled files of an image-folder dataset ``root/<split>/<grade>/<image>``.

    Raises:
        DatasetError: no ``train`` folder, a class folder that is not a grade 0-4, or an
            image outside a class folder.
    """
    if not (root / "train").is_dir():
        raise DatasetError(f"{root}: no train/ folder and no labels.csv/labels.parquet")
    files = []
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                if entry.suffix.lower() in IMAGE_SUFFIXES:
                    raise DatasetError(f"{entry}: image outside a class folder 0-4")
                continue
            grade = _parse_grade(entry.name, f"{entry}: class folder")
            files += [
                LabelledFile(path, path.relative_to(root).as_posix(), grade, split)
                for path in sorted(entry.rglob("*"))
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
            ]
    if not any(item.split == "val" for item in files):
        files = [_carve_val(item) for item in files]
    return files


def _hash_fraction(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def _carve_val(item: LabelledFile) -> LabelledFile:
    if item.split == "train" and _hash_fraction(item.relpath) < VAL_SHARE:
        return replace(item, split="val")
    return item


def _read_table(table: Path) -> pd.DataFrame:
    if table.suffix.lower() == ".parquet":
        frame = pd.read_parquet(table)
    else:
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    if "kl_grade" not in frame.columns:
        raise DatasetError(f"{table}: no kl_grade column (columns: {list(frame.columns)})")
    if "file" not in frame.columns and "sop_instance_uid" not in frame.columns:
        raise DatasetError(f"{table}: needs a file or a sop_instance_uid column")
    return frame


def _dicom_uids(root: Path, table: Path) -> dict[str, Path]:
    """(0008,0018) SOPInstanceUID of every DICOM file under ``root``."""
    uids = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p != table):
        try:
            header = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
            )
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        uid = header.get("SOPInstanceUID")
        if uid:
            uids[str(uid)] = path
    return uids


def _table_path(root: Path, row: pd.Series, uids: dict[str, Path] | None, where: str) -> Path:
    if uids is not None:
        uid = str(row["sop_instance_uid"]).strip()
        if uid not in uids:
            raise DatasetError(f"{where}: no DICOM file under {root} has SOPInstanceUID {uid}")
        return uids[uid]
    path = (root / str(row["file"]).strip()).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"{where}: file {row['file']!r} lies outside {root}")
    return path


def read_labels_table(root: Path, table: Path) -> list[LabelledFile]:
    """Labelled files listed in a CSV/Parquet labels table (see the module docstring).

    Raises:
        DatasetError: missing columns, a grade outside 0-4, an unknown split, a file listed
            twice, or listed files that do not exist.
    """
    root, table = root.resolve(), table.resolve()
    frame = _read_table(table)
    uids = None if "file" in frame.columns else _dicom_uids(root, table)
    files, missing = [], []
    # Row numbers as a spreadsheet shows them: the header is row 1.
    for number, (_, row) in enumerate(frame.iterrows(), start=2):
        where = f"{table.name} row {number}"
        path = _table_path(root, row, uids, where)
        if not path.is_file():
            missing.append(str(row.get("file", path)))
            continue
        split = (_cell(row, "split") or "").lower() or None
        if split is not None and split not in SPLITS:
            raise DatasetError(f"{where}: split {split!r} is not one of {SPLITS}")
        group = next((_cell(row, c) for c in GROUP_COLUMNS if _cell(row, c)), None)
        rel = path.relative_to(root).as_posix()
        files.append(LabelledFile(path, rel, _parse_grade(row["kl_grade"], where), split, group))
    if missing:
        raise DatasetError(f"{table}: {len(missing)} listed files do not exist: {missing[:5]}")
    counts = Counter(item.relpath for item in files)
    duplicates = sorted(relpath for relpath, count in counts.items() if count > 1)
    if duplicates:
        raise DatasetError(f"{table}: files listed more than once: {duplicates[:5]}")
    return files


def discover(root: Path, labels: Path | None = None) -> list[LabelledFile]:
    """The labelled files of the dataset at ``root`` (labels table if present, else folders).

    Raises:
        DatasetError: ``root`` is not a directory or holds no images.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    table = labels or next((root / n for n in TABLE_NAMES if (root / n).is_file()), None)
    files = read_labels_table(root, table) if table else list_image_folder(root)
    if not files:
        raise DatasetError(f"{root}: no labelled images found")
    return files


def dataset_fingerprint(files: Sequence[LabelledFile]) -> str:
    """sha256 over the sorted (relative path, file content sha256, label, split) records."""
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.relpath):
        content = file_sha256(item.path)
        digest.update(f"{item.relpath}\t{content}\t{item.label}\t{item.split or ''}\n".encode())
    return digest.hexdigest()


def assign_split(item: LabelledFile) -> LabelledFile:
    if item.split is not None:
        return item
    fraction = _hash_fraction(item.group or item.relpath)
    split = "train" if fraction < 1 - VAL_SHARE - TEST_SHARE else "val"
    return replace(item, split="test" if fraction >= 1 - TEST_SHARE else split)
