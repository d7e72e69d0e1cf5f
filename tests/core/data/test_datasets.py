"""Tests for koa_core.data.datasets: both layouts, splits, caching, and every bad-input error."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from koa_core.data.datasets import load_dataset
from koa_core.data.labels import dataset_fingerprint, discover
from koa_core.errors import DatasetError
from koa_core.io.model_input import FileModelInput, load_model_input
from tests.core.kl_fixtures import knee_like, write_dicom, write_image_folder

SIZE = 64


@pytest.mark.parametrize("suffix,rgb", [(".png", False), (".png", True), (".jpg", False)])
def test_image_folder_layout(tmp_path: Path, suffix: str, rgb: bool) -> None:
    root = write_image_folder(tmp_path / "kl", {"train": 2, "val": 1, "test": 1}, suffix, rgb)
    dataset = load_dataset(root, SIZE)
    assert sorted(dataset.splits) == ["test", "train", "val"]
    train = dataset.splits["train"]
    assert train.images.shape == (10, SIZE, SIZE)
    assert train.images.dtype == torch.uint8
    assert train.class_counts() == [2, 2, 2, 2, 2]
    assert dataset.splits["val"].class_counts() == [1, 1, 1, 1, 1]
    assert not dataset.skipped
    # Percentile clipping stretched each image: the dark border is 0, the bone bright.
    assert int(train.images.min()) == 0
    assert int(train.images.max()) > 180


def test_auto_test_folder_is_ignored_unless_named(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "kl", {"train": 1, "val": 1, "auto_test": 2})
    files = discover(root)
    assert {item.split for item in files} == {"train", "val"}
    dataset = load_dataset(root, SIZE)
    assert "auto_test" not in dataset.splits


def test_missing_val_is_carved_deterministically_from_train(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "kl", {"train": 12})
    first, second = discover(root), discover(root)
    assert first == second
    val = [item for item in first if item.split == "val"]
    assert 0 < len(val) < len(first) // 2


def test_cache_is_reused_and_keyed_by_content(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "kl", {"train": 1, "val": 1})
    cache = tmp_path / "cache"
    first = load_dataset(root, SIZE, cache_dir=cache)
    calls: list[Path] = []

    def counting(path: Path, size: int) -> FileModelInput:
        calls.append(path)
        return load_model_input(path, size)

    again = load_dataset(root, SIZE, cache_dir=cache, loader=counting)
    assert calls == []
    assert torch.equal(again.splits["train"].images, first.splits["train"].images)
    assert again.splits["val"].paths == first.splits["val"].paths
    (root / "train" / "0" / "train_0_0.png").write_bytes(
        (root / "train" / "1" / "train_1_0.png").read_bytes()
    )
    changed = load_dataset(root, SIZE, cache_dir=cache, loader=counting)
    assert changed.fingerprint != first.fingerprint
    assert len(calls) == 10


def test_fingerprint_depends_on_content_and_label(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "kl", {"train": 1, "val": 1})
    files = discover(root)
    assert dataset_fingerprint(files) == dataset_fingerprint(list(reversed(files)))
    relabelled = [files[0].__class__(files[0].path, files[0].relpath, 4, "train"), *files[1:]]
    assert dataset_fingerprint(relabelled) != dataset_fingerprint(files)


def test_unreadable_file_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_image_folder(tmp_path / "kl", {"train": 3, "val": 2})
    (root / "train" / "2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with caplog.at_level(logging.WARNING, logger="koa_core.data.datasets"):
        dataset = load_dataset(root, SIZE)
    assert [s.path for s in dataset.skipped] == ["train/2/broken.png"]
    assert dataset.skipped[0].reason
    assert dataset.splits["train"].class_counts() == [3, 3, 3, 3, 3]
    assert "skipped 1 of 26" in caplog.text


def test_too_many_unreadable_files_fail_the_dataset(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "kl", {"train": 1, "val": 1})
    for grade in range(5):
        (root / "train" / str(grade) / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="5 of 15 images unreadable"):
        load_dataset(root, SIZE)


@pytest.mark.parametrize(
    "damage,message",
    [
        ("no_images", "no labelled images"),
        ("empty_class", "train split has no images of KL3"),
        ("bad_label", "outside 0-4"),
        ("not_a_grade", "not an integer"),
        ("no_train", "no train/ folder"),
        ("missing_root", "does not exist"),
    ],
)
def test_bad_image_folders_raise_dataset_error(tmp_path: Path, damage: str, message: str) -> None:
    root = write_image_folder(tmp_path / "kl", {"train": 1, "val": 1})
    if damage == "no_images":
        for image in root.rglob("*.png"):
            image.unlink()
    elif damage == "empty_class":
        shutil.rmtree(root / "train" / "3")
    elif damage == "bad_label":
        (root / "train" / "5").mkdir()
    elif damage == "not_a_grade":
        (root / "val" / "severe").mkdir()
    elif damage == "no_train":
        shutil.rmtree(root / "train")
    else:
        root = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=message):
        load_dataset(root, SIZE)


def write_dicom_dataset(root: Path, patients: int = 10) -> pd.DataFrame:
    rows = []
    for patient in range(patients):
        for grade in range(5):
            relpath = f"dicom/p{patient}/k{grade}.dcm"
            uid = write_dicom(root / relpath, knee_like(grade, patient), f"P{patient:03d}")
            rows.append({"file": relpath, "sop_instance_uid": uid, "kl_grade": grade})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
@pytest.mark.parametrize("key", ["file", "sop_instance_uid"])
def test_dicom_with_labels_table(tmp_path: Path, table_format: str, key: str) -> None:
    root = tmp_path / "dicoms"
    frame = write_dicom_dataset(root)[[key, "kl_grade"]]
    frame = frame.assign(split=["val" if i < 10 else "train" for i in range(len(frame))])
    if table_format == "csv":
        frame.to_csv(root / "labels.csv", index=False)
    else:  # Parquet keeps dtypes: grades often arrive as floats there
        frame.astype({"kl_grade": "float64"}).to_parquet(root / "labels.parquet")
    dataset = load_dataset(root, SIZE)
    assert dataset.splits["train"].class_counts() == [8, 8, 8, 8, 8]
    assert dataset.splits["val"].class_counts() == [2, 2, 2, 2, 2]
    assert all(path.startswith("dicom/p") for path in dataset.splits["val"].paths)


def test_split_by_patient_keeps_each_patient_in_one_split(tmp_path: Path) -> None:
    root = tmp_path / "dicoms"
    # 14 patients: the hash split gives this fixed set of ids all three splits.
    write_dicom_dataset(root, patients=14)[["file", "kl_grade"]].to_csv(
        root / "labels.csv", index=False
    )
    dataset = load_dataset(root, SIZE)
    patient_splits: dict[str, set[str]] = {}
    for name, split in dataset.splits.items():
        for path in split.paths:
            patient_splits.setdefault(path.split("/")[1], set()).add(name)
    assert all(len(names) == 1 for names in patient_splits.values())
    assert sorted(dataset.splits) == ["test", "train", "val"]


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("kl_grade", "7", "row 5: KL grade '7' is outside 0-4"),
        ("kl_grade", "", "row 5: KL grade '' is not an integer"),
        ("file", "dicom/nobody.dcm", "listed files do not exist"),
        ("file", "../outside.dcm", "outside"),
        ("split", "holdout", "row 5: split 'holdout' is not one of"),
    ],
)
def test_bad_labels_table_raises_dataset_error(
    tmp_path: Path, column: str, value: str, message: str
) -> None:
    root = tmp_path / "dicoms"
    frame = write_dicom_dataset(root, patients=2)[["file", "kl_grade"]].astype(str)
    frame["split"] = "train"
    frame.loc[3, column] = value
    frame.to_csv(root / "labels.csv", index=False)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root, SIZE)


def test_labels_table_without_a_grade_column(tmp_path: Path) -> None:
    root = tmp_path / "dicoms"
    write_dicom_dataset(root, patients=1)[["file"]].to_csv(root / "labels.csv", index=False)
    with pytest.raises(DatasetError, match="no kl_grade column"):
        load_dataset(root, SIZE)
