"""Tests for koa_core.phantom.writers: DICOM files, PNG image folders, batch layouts."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import DigitalXRayImageStorageForPresentation

from koa_core.imaging.transforms import FIELD_MM, ROI_MM, centre_crop
from koa_core.phantom.anatomy import render_knee, rng_for
from koa_core.phantom.dicom import TRANSFER_SYNTAXES, knee_dataset, save_dicom
from koa_core.phantom.writers import (
    PhantomRecord,
    model_input_png,
    nightly_image,
    sample_geometry,
    training_geometry,
    write_kl_folders,
    write_nightly_batch,
)

DAY = date(2026, 3, 14)
SMALL_PX = (512, 640)


def _read_labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PhantomRecord]]:
    out = tmp_path_factory.mktemp("nightly")
    return out, write_nightly_batch(out, 20, 5, DAY, size_px=SMALL_PX)


def test_nightly_dicoms_read_back_with_their_grade_and_side(
    nightly: tuple[Path, list[PhantomRecord]],
) -> None:
    out, records = nightly
    assert len(records) == 20
    for record in records:
        assert record.path.relative_to(out).parts[0] == DAY.isoformat()
        assert len(record.path.relative_to(out).parts) == 4
        ds = pydicom.dcmread(record.path)
        assert ds.ImageComments == f"KL={record.grade}"
        assert ds.ImageLaterality == record.laterality
        assert ds.SOPInstanceUID == record.sop_instance_uid == record.path.stem
        assert (ds.Modality, ds.BodyPartExamined, ds.ViewPosition) == ("DX", "KNEE", "PA")
        assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY"]
        assert ds.StudyDate == DAY.strftime("%Y%m%d")
        assert ds.Manufacturer == "koa-phantom"
        pixels = ds.pixel_array
        assert pixels.shape == (ds.Rows, ds.Columns)
        assert int(pixels.max()) < 2**ds.BitsStored
        assert ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
    assert len({r.sop_instance_uid for r in records}) == 20


def test_nightly_labels_table_matches_files(nightly: tuple[Path, list[PhantomRecord]]) -> None:
    out, records = nightly
    rows = _read_labels(out / f"{DAY.isoformat()}.labels.csv")
    assert [row["file"] for row in rows] == [r.path.relative_to(out).as_posix() for r in records]
    assert [int(row["kl_grade"]) for row in rows] == [r.grade for r in records]
    assert [row["sop_instance_uid"] for row in rows] == [r.sop_instance_uid for r in records]


def test_nightly_image_is_pure_in_seed_and_index(
    nightly: tuple[Path, list[PhantomRecord]],
    tmp_path: Path,
) -> None:
    """One image written alone (as a chunk in another process would) is byte-identical."""
    _, records = nightly
    alone = nightly_image(tmp_path, 5, 3, DAY, size_px=SMALL_PX)
    assert alone.path.read_bytes() == records[3].path.read_bytes()
    other_day = nightly_image(tmp_path, 5, 3, date(2026, 3, 15), size_px=SMALL_PX)
    assert other_day.sop_instance_uid != alone.sop_instance_uid


@pytest.mark.parametrize("syntax", sorted(TRANSFER_SYNTAXES))
@pytest.mark.parametrize(("bits", "photometric"), [(12, "MONOCHROME1"), (16, "MONOCHROME2")])
def test_each_transfer_syntax_decodes_losslessly(
    tmp_path: Path,
    syntax: str,
    bits: int,
    photometric: str,
) -> None:
    image = render_knee(
        3, "L", 1, rows=300, columns=260, spacing_mm=0.8, bits_stored=bits, photometric=photometric
    )
    ds = knee_dataset(image, key=(1, syntax), patient_id="P1", study_date=DAY)
    save_dicom(ds, tmp_path / "knee.dcm", syntax)
    back = pydicom.dcmread(tmp_path / "knee.dcm")
    assert back.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax]
    assert (back.BitsStored, back.PhotometricInterpretation) == (bits, photometric)
    assert back.ImageLaterality == "L" and back.ImageComments == "KL=3"
    assert np.array_equal(back.pixel_array, image.pixels)


def test_geometry_is_realistic() -> None:
    for seed in range(200):
        geometry = sample_geometry(rng_for(seed))
        assert min(geometry.rows, geometry.columns) >= 1024
        assert max(geometry.rows, geometry.columns) <= 2500
        assert 0.1 <= geometry.spacing_mm <= 0.2
        assert 180 <= geometry.columns * geometry.spacing_mm <= 320.5
        assert 180 <= geometry.rows * geometry.spacing_mm <= 320.5


def test_kl_folders_png_layout(tmp_path: Path) -> None:
    records = write_kl_folders(tmp_path, 20, 3)
    assert sorted(r.split for r in records).count("train") == 14
    assert {r.split for r in records} == {"train", "val", "test"}
    for record in records:
        split, label, name = record.path.relative_to(tmp_path).parts
        assert (split, int(label)) == (record.split, record.grade)
        assert name.endswith(f"_{record.laterality}.png")
        with Image.open(record.path) as png:
            assert (png.mode, png.size) == ("L", (224, 224))
            assert png.text["kl_grade"] == label
            pixels = np.asarray(png)
        assert pixels.max() > 200 and pixels.min() < 50
    rows = _read_labels(tmp_path / "labels.csv")
    assert len(rows) == 20 and "true_kl_grade" not in rows[0]


def test_kl_folders_label_noise_keeps_true_grade(tmp_path: Path) -> None:
    records = write_kl_folders(tmp_path, 30, 4, label_noise=0.5)
    assert all(abs(r.grade - r.true_grade) <= 1 for r in records)  # type: ignore[operator]
    assert any(r.grade != r.true_grade for r in records)
    rows = _read_labels(tmp_path / "labels.csv")
    assert [int(row["true_kl_grade"]) for row in rows] == [r.true_grade for r in records]
    assert [int(row["kl_grade"]) for row in rows] == [r.grade for r in records]


def test_kl_folders_dicom(tmp_path: Path) -> None:
    records = write_kl_folders(tmp_path, 4, 2, file_format="dicom", size_px=SMALL_PX)
    for record in records:
        ds = pydicom.dcmread(record.path)
        assert ds.ImageComments == f"KL={record.grade}"
        assert record.path.parent.name == str(record.grade)
    rows = _read_labels(tmp_path / "labels.csv")
    assert [row["sop_instance_uid"] for row in rows] == [r.sop_instance_uid for r in records]


def test_nightly_png_writes_the_field_as_16_bit(tmp_path: Path) -> None:
    records = write_nightly_batch(tmp_path, 2, 8, DAY, file_format="png", size_px=SMALL_PX)
    for record in records:
        assert record.path.name.endswith(f"_{record.laterality}.png")
        with Image.open(record.path) as png:
            assert png.mode.startswith("I")
            assert png.text["laterality"] == record.laterality


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_kl_folders(tmp_path, 1, 0, file_format="jpeg")


def test_a_night_written_in_parts_keeps_every_part_in_its_labels(tmp_path: Path) -> None:
    dicoms = write_nightly_batch(tmp_path, 2, seed=1, batch_date=DAY, size_px=SMALL_PX)
    pngs = write_nightly_batch(tmp_path, 2, seed=2, batch_date=DAY, file_format="png")
    again = write_nightly_batch(tmp_path, 2, seed=2, batch_date=DAY, file_format="png")
    rows = _read_labels(tmp_path / f"{DAY.isoformat()}.labels.csv")
    expected = {r.path.relative_to(tmp_path).as_posix(): r.grade for r in [*dicoms, *pngs]}
    assert again == pngs and len(rows) == len(expected) == 4
    assert {row["file"]: int(row["kl_grade"]) for row in rows} == expected


def test_kl_folder_pngs_show_the_roi_around_the_joint() -> None:
    """The grader's PNGs are ``ROI_MM`` (140 mm) around the joint, not the 150 mm field:
    a larger render cut to the ROI gives the same picture as the ROI-only render."""
    geometry = training_geometry()
    assert ROI_MM <= geometry.rows * geometry.spacing_mm < ROI_MM + 3 * geometry.spacing_mm
    small = render_knee(
        2,
        "R",
        9,
        rows=geometry.rows,
        columns=geometry.columns,
        spacing_mm=geometry.spacing_mm,
        marker=False,
    )
    large = render_knee(2, "R", 9, rows=500, columns=500, spacing_mm=0.4, marker=False)
    a, b = (model_input_png(image).astype(np.float64) for image in (small, large))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.985
    wider = centre_crop(large.bone_bright(), 0.4, FIELD_MM)
    c = np.asarray(Image.fromarray(wider).resize((224, 224)), dtype=np.float64)
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] < np.corrcoef(a.ravel(), b.ravel())[0, 1]
