"""Tests for koa_core.phantom.badfiles: every kind is written, with the reason koa must give."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pydicom
import pytest
from pydicom.errors import InvalidDicomError

from koa_core import errors
from koa_core.phantom.badfiles import BAD_KINDS, EXPECTED_REASONS, BadFileRecord, write_bad_files
from koa_core.phantom.writers import write_nightly_batch

READ_REASONS = {
    cls.reason
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.ImageReadError)
}
CHECK_REASONS = {"body_part", "modality", "duplicate_uid", "derived"}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[BadFileRecord]]:
    records = write_bad_files(tmp_path_factory.mktemp("bad"), len(BAD_KINDS), 3)
    by_kind: dict[str, list[BadFileRecord]] = {}
    for record in records:
        by_kind.setdefault(record.kind, []).append(record)
    return by_kind


def test_every_kind_is_written_with_its_expected_reason(
    bad_files: dict[str, list[BadFileRecord]],
) -> None:
    assert set(bad_files) == set(BAD_KINDS)
    for kind, records in bad_files.items():
        for record in records:
            assert record.path.exists()
            assert record.expected_reason == EXPECTED_REASONS[kind]
            assert record.expected_reason in READ_REASONS | CHECK_REASONS


@pytest.mark.parametrize("kind", ["wrong_body_part", "wrong_modality", "derived"])
def test_files_for_the_checks_read_and_decode(
    bad_files: dict[str, list[BadFileRecord]],
    kind: str,
) -> None:
    ds = pydicom.dcmread(bad_files[kind][0].path)
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
    expected = {
        "wrong_body_part": ("BodyPartExamined", "CHEST"),
        "wrong_modality": ("Modality", "CT"),
        "derived": ("ImageType", "DERIVED"),
    }[kind]
    value = ds.get(expected[0])
    assert (value[0] if kind == "derived" else value) == expected[1]


def test_unreadable_kinds_are_unreadable(bad_files: dict[str, list[BadFileRecord]]) -> None:
    assert bad_files["zero_byte"][0].path.stat().st_size == 0
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(bad_files["not_dicom"][0].path)
    truncated = pydicom.dcmread(bad_files["truncated"][0].path)
    with pytest.raises(ValueError):
        _ = truncated.pixel_array


def test_header_kinds_carry_their_defect(bad_files: dict[str, list[BadFileRecord]]) -> None:
    colour = pydicom.dcmread(bad_files["colour"][0].path)
    assert (colour.SamplesPerPixel, colour.PhotometricInterpretation) == (3, "RGB")
    absurd = pydicom.dcmread(bad_files["absurd_dimensions"][0].path)
    assert (absurd.Rows, absurd.Columns) == (65535, 65535) and len(absurd.PixelData) < 1024
    frames = pydicom.dcmread(bad_files["multi_frame"][0].path)
    assert int(frames.NumberOfFrames) == 3


def test_duplicate_pair_shares_one_uid(bad_files: dict[str, list[BadFileRecord]]) -> None:
    pair = bad_files["duplicate_uid"]
    assert len(pair) == 2
    uids = {pydicom.dcmread(record.path).SOPInstanceUID for record in pair}
    assert len(uids) == 1


def test_bad_files_are_deterministic_and_cycle(tmp_path: Path) -> None:
    first = write_bad_files(tmp_path / "a", 12, 1)
    again = write_bad_files(tmp_path / "b", 12, 1)
    assert [r.kind for r in first] == [r.kind for r in again]
    assert [r.path.read_bytes() for r in first] == [r.path.read_bytes() for r in again]
    assert [r.kind for r in first][-2:] == ["truncated", "zero_byte"]


def test_nightly_batch_mixes_in_bad_files(tmp_path: Path) -> None:
    records = write_nightly_batch(tmp_path, 2, 1, date(2026, 1, 1), bad=3, size_px=(512, 512))
    bad = [r for r in records if r.expected_reason is not None]
    assert [r.expected_reason for r in bad] == [EXPECTED_REASONS[k] for k in BAD_KINDS[:3]]
    assert all(r.grade is None for r in bad)
    assert all(r.path.is_relative_to(tmp_path / "2026-01-01") for r in records)
