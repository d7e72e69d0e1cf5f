"""Tests for koa_core.phantom.film_rois: knee ROIs cut from whole films as a KL image folder."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from koa_core.config import get_settings
from koa_core.imaging.roi import roi_box, roi_input
from koa_core.io.model_input import load_model_input, to_uint8
from koa_core.phantom import (
    JITTER_CLIP,
    PhantomRecord,
    film_roi_pixels,
    roi_offsets_mm,
    training_film,
    write_film_kl_folders,
)

SPACING_MM = 0.7
SIZE = 128
SEED = 5
FILMS = 20


def _index(record: PhantomRecord) -> int:
    return int(record.path.stem.split("_")[0])


@pytest.fixture(scope="module")
def centred(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PhantomRecord]]:
    """ROIs cut at the true joints (no jitter), at the size the reader is asked for."""
    out = tmp_path_factory.mktemp("film-rois")
    records = write_film_kl_folders(out, 6, SEED, size=SIZE, spacing_mm=SPACING_MM, jitter_mm=0.0)
    return out, records


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PhantomRecord]]:
    out = tmp_path_factory.mktemp("film-rois-noisy")
    records = write_film_kl_folders(out, FILMS, SEED, label_noise=0.5, size=64, spacing_mm=0.8)
    return out, records


@pytest.mark.parametrize("side", ["R", "L"])
def test_reading_a_file_gives_the_roi_the_scorer_cuts_from_the_film(
    centred: tuple[Path, list[PhantomRecord]], side: str
) -> None:
    _, records = centred
    chosen = [record for record in records if record.laterality == side]
    assert chosen, f"no {side} knee in the fixture's films"
    roi_mm = get_settings().roi_mm
    for record in chosen:
        film = training_film(SEED, _index(record), spacing_mm=SPACING_MM)
        (knee,) = (knee for knee in film.knees if knee.side == side)
        box = roi_box(knee.joint_x, knee.joint_y, film.spacing_mm, roi_mm)
        expected = to_uint8(roi_input(film.bone_bright(), box, SIZE, mirror=side == "L").pixels)
        read = load_model_input(record.path, SIZE)
        assert read.flipped == (side == "L")
        difference = np.abs(read.pixels.astype(int) - expected.astype(int))
        assert difference.max() <= 1


def test_files_are_not_mirrored_and_carry_their_side_grade_and_spacing(
    centred: tuple[Path, list[PhantomRecord]],
) -> None:
    _, records = centred
    left = next(record for record in records if record.laterality == "L")
    film = training_film(SEED, _index(left), spacing_mm=SPACING_MM)
    (knee,) = (knee for knee in film.knees if knee.side == "L")
    with Image.open(left.path) as image:
        assert image.mode == "L"
        info = dict(image.info)
        pixels = np.asarray(image)
    assert np.array_equal(pixels, film_roi_pixels(film, knee, SIZE))
    assert info["laterality"] == "L" and int(info["kl_grade"]) == left.grade == knee.label
    assert float(info["pixel_spacing_mm"]) == pytest.approx(get_settings().roi_mm / SIZE)
    assert left.path.parent.name == str(left.grade) and left.path.name.endswith("_L.png")


def test_both_knees_of_a_film_share_its_split(
    noisy: tuple[Path, list[PhantomRecord]],
) -> None:
    _, records = noisy
    splits: dict[int, set[str]] = defaultdict(set)
    for record in records:
        assert record.split is not None and record.path.parts[-3] == record.split
        splits[_index(record)].add(record.split)
    assert set(splits) == set(range(FILMS))
    assert all(len(names) == 1 for names in splits.values())
    counts = {
        name: sum(names == {name} for names in splits.values()) for name in ("train", "val", "test")
    }
    assert counts == {"train": 14, "val": 3, "test": 3}
    assert any(
        sum(r.laterality is not None for r in records if _index(r) == i) == 2 for i in splits
    )


def test_labels_csv_lists_every_knee_with_its_noisy_and_true_grade(
    noisy: tuple[Path, list[PhantomRecord]],
) -> None:
    out, records = noisy
    with (out / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == [r.path.relative_to(out).as_posix() for r in records]
    assert [int(row["kl_grade"]) for row in rows] == [r.grade for r in records]
    assert [int(row["true_kl_grade"]) for row in rows] == [r.true_grade for r in records]
    assert {row["laterality"] for row in rows} == {"R", "L"}


def test_label_noise_moves_some_labels_to_an_adjacent_grade(
    noisy: tuple[Path, list[PhantomRecord]], tmp_path: Path
) -> None:
    _, records = noisy
    moved = [r for r in records if r.grade != r.true_grade]
    assert moved and all(abs(r.grade - r.true_grade) == 1 for r in moved)  # type: ignore[operator]
    clean = write_film_kl_folders(tmp_path, 6, SEED, size=32, spacing_mm=0.8)
    assert all(r.grade == r.true_grade for r in clean)


def test_the_same_seed_writes_the_same_files(tmp_path: Path) -> None:
    first = write_film_kl_folders(tmp_path / "a", 3, 11, size=32, spacing_mm=0.8)
    again = write_film_kl_folders(tmp_path / "b", 3, 11, size=32, spacing_mm=0.8)
    other = write_film_kl_folders(tmp_path / "c", 3, 12, size=32, spacing_mm=0.8)
    assert [r.path.relative_to(tmp_path / "a") for r in first] == [
        r.path.relative_to(tmp_path / "b") for r in again
    ]
    assert all(
        a.path.read_bytes() == b.path.read_bytes() for a, b in zip(first, again, strict=True)
    )
    assert {r.path.read_bytes() for r in first}.isdisjoint(r.path.read_bytes() for r in other)


def test_jitter_moves_each_roi_by_its_drawn_offset(tmp_path: Path) -> None:
    (record, *_) = write_film_kl_folders(tmp_path, 1, SEED, size=SIZE, spacing_mm=SPACING_MM)
    film = training_film(SEED, 0, spacing_mm=SPACING_MM)
    offsets = roi_offsets_mm(SEED, 0, len(film.knees), 2.0)
    written = np.asarray(Image.open(record.path))
    assert np.array_equal(written, film_roi_pixels(film, film.knees[0], SIZE, offset_mm=offsets[0]))
    assert not np.array_equal(written, film_roi_pixels(film, film.knees[0], SIZE))


def test_offsets_are_a_few_mm_deterministic_and_bounded() -> None:
    draws = np.array([roi_offsets_mm(1, index, 2, 2.0) for index in range(500)]).reshape(-1, 2)
    assert np.abs(draws).max() <= JITTER_CLIP * 2.0
    assert draws.std(axis=0) == pytest.approx([2.0, 2.0], rel=0.15)
    assert roi_offsets_mm(1, 3, 2, 2.0) == roi_offsets_mm(1, 3, 2, 2.0)
    assert roi_offsets_mm(1, 3, 2, 0.0) == [(0.0, 0.0), (0.0, 0.0)]
