"""Tests for koa_core.phantom.films and film_writers: layout, anatomy on film, files, truth."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from koa_core.cli.app import app
from koa_core.errors import PhantomSpecError
from koa_core.io.reader import read_radiograph
from koa_core.localize.labels import read_film_labels
from koa_core.phantom import (
    FILM_LABEL_COLUMNS,
    TRANSFER_SYNTAXES,
    Film,
    FilmKnee,
    film_dataset,
    film_file,
    render_film,
    save_dicom,
    write_films,
    write_nightly_films,
)
from koa_core.phantom.films import JOINT_CLEARANCE_MM, JOINT_SEPARATION_MM

SPACING = 0.5
DAY = date(2026, 5, 4)
SEEDS = (0, 3, 8, 13)
KINDS = ("bilateral", "unilateral")


@pytest.fixture(scope="module")
def films() -> dict[tuple[str, int], Film]:
    """Each film the per-knee tests look at, rendered once."""
    return {(kind, s): render_film(kind, s, spacing_mm=SPACING) for kind in KINDS for s in SEEDS}


def _knees(films: dict[tuple[str, int], Film]) -> list[tuple[Film, FilmKnee]]:
    return [(film, knee) for film in films.values() for knee in film.knees]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("seed", SEEDS)
def test_bilateral_film_has_the_right_knee_on_the_viewers_left(
    films: dict[tuple[str, int], Film], seed: int
) -> None:
    film = films["bilateral", seed]
    right, left = film.knees
    assert (right.side, left.side, film.image_laterality) == ("R", "L", "B")
    assert right.joint_x < left.joint_x
    separation = (left.joint_x - right.joint_x) * film.spacing_mm
    width = film.pixels.shape[1] * film.spacing_mm
    assert JOINT_SEPARATION_MM[0] - 5 < separation <= JOINT_SEPARATION_MM[1] + 5
    assert separation <= width - 2 * JOINT_CLEARANCE_MM[0] + 5
    assert abs(right.joint_y - left.joint_y) * film.spacing_mm <= 12.0


@pytest.mark.parametrize("kind", KINDS)
def test_joints_stay_clear_of_the_film_edges_but_are_not_centred(kind: str) -> None:
    offsets = []
    for seed in range(12):
        film = render_film(kind, seed, spacing_mm=0.8)
        rows, columns = film.pixels.shape
        for knee in film.knees:
            x_mm, y_mm = (knee.joint_x + 0.5) * 0.8, (knee.joint_y + 0.5) * 0.8
            assert JOINT_CLEARANCE_MM[0] - 2 <= x_mm <= columns * 0.8 - JOINT_CLEARANCE_MM[0] + 2
            assert JOINT_CLEARANCE_MM[1] - 5 <= y_mm <= rows * 0.8 - JOINT_CLEARANCE_MM[2] + 5
            offsets.append(abs(y_mm - rows * 0.4))
    assert max(offsets) > 30.0


def _rise(profile: np.ndarray) -> float:
    """How far a profile climbs again after falling: the ridge of a separate bone."""
    return float(np.max(profile - np.minimum.accumulate(profile)))


def test_each_fibula_is_on_the_lateral_side(films: dict[tuple[str, int], Film]) -> None:
    """62-78 mm below the joint the tibial shaft is narrow and the fibula stands apart
    from it, on the viewer's left of a right knee and the viewer's right of a left knee."""
    for film, knee in _knees(films):
        image, s = film.bone_bright(), film.spacing_mm
        profile = image[round(knee.joint_y + 62 / s) : round(knee.joint_y + 78 / s)].mean(axis=0)
        x, near, far = round(knee.joint_x), round(18 / s), round(60 / s)
        left, right = profile[max(0, x - far) : x - near][::-1], profile[x + near : x + far]
        lateral, medial = (left, right) if knee.side == "R" else (right, left)
        span = float(np.percentile(image, 99) - np.percentile(image, 1))
        assert _rise(lateral) > 0.08 * span, (film.kind, knee)
        assert _rise(lateral) > _rise(medial) + 0.02 * span, (film.kind, knee)


def test_labelled_joint_centre_is_the_dark_band_between_femur_and_tibia(
    films: dict[tuple[str, int], Film],
) -> None:
    """In both compartments (about 23 mm either side of the centre) the darkest row within
    10 mm is the joint space; their mean (a leg's tilt moves them oppositely) is the label."""
    for film, knee in _knees(films):
        image, s = film.bone_bright(), film.spacing_mm
        rows = np.arange(round(knee.joint_y - 10 / s), round(knee.joint_y + 10 / s) + 1)
        darkest = []
        for sign in (-1, 1):
            start, stop = sorted(round(knee.joint_x + sign * d / s) for d in (18, 28))
            profile = image[rows, start:stop].mean(axis=1)
            low = int(np.argmin(profile))
            assert profile[0] > profile[low] < profile[-1]
            darkest.append(rows[low])
        assert abs(np.mean(darkest) - knee.joint_y) * s < 3.0, (film.kind, knee)


@pytest.mark.parametrize("kind", [*KINDS, "lateral"])
def test_same_seed_same_film_other_seed_other_film(kind: str) -> None:
    first, again = render_film(kind, 21, spacing_mm=0.8), render_film(kind, 21, spacing_mm=0.8)
    other = render_film(kind, 22, spacing_mm=0.8)
    assert np.array_equal(first.pixels, again.pixels) and first.knees == again.knees
    assert first.pixels.shape != other.pixels.shape or not np.array_equal(
        first.pixels, other.pixels
    )


def test_overriding_the_spacing_keeps_the_layout_in_millimetres() -> None:
    coarse, fine = render_film("bilateral", 4, spacing_mm=0.8), render_film("bilateral", 4)
    assert 0.1 <= fine.spacing_mm <= 0.2
    for a, b in zip(coarse.knees, fine.knees, strict=True):
        assert (a.joint_x + 0.5) * 0.8 == pytest.approx((b.joint_x + 0.5) * fine.spacing_mm)
        assert (a.side, a.grade) == (b.side, b.grade)


@pytest.mark.parametrize("side", ["R", "L"])
def test_unilateral_and_lateral_films_have_the_side_asked_for(side: str) -> None:
    film = render_film("unilateral", 5, side=side, grades=(3,), spacing_mm=0.8)
    assert film.image_laterality == side and [k.side for k in film.knees] == [side]
    assert film.knees[0].grade == film.knees[0].label == 3
    lateral = render_film("lateral", 5, side=side, spacing_mm=0.8)
    assert lateral.knees == () and lateral.image_laterality == side


@pytest.mark.parametrize("kind", [*KINDS, "lateral"])
def test_markers_sit_on_the_patients_side(kind: str) -> None:
    for seed in range(6):
        film = render_film(kind, seed, spacing_mm=0.8)
        columns = film.pixels.shape[1]
        letters = [letter for letter, _ in film.markers]
        assert ("R" in letters) if kind == "bilateral" else (letters == [film.image_laterality])
        for letter, (r0, r1, c0, c1) in film.markers:
            assert r1 > r0 and c1 > c0
            assert c1 <= columns // 2 if letter == "R" else c0 >= columns // 2


def test_grades_and_label_noise() -> None:
    film = render_film("bilateral", 2, grades=(4, 0), spacing_mm=0.8)
    assert [(k.grade, k.label) for k in film.knees] == [(4, 4), (0, 0)]
    noisy = [render_film("unilateral", s, spacing_mm=0.8, label_noise=0.5) for s in range(12)]
    flips = [abs(k.label - k.grade) for f in noisy for k in f.knees]
    assert set(flips) <= {0, 1} and 1 in flips


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "oblique"},
        {"kind": "bilateral", "side": "R"},
        {"kind": "bilateral", "grades": (1,)},
        {"kind": "unilateral", "grades": (5,)},
        {"kind": "unilateral", "bits_stored": 8},
        {"kind": "unilateral", "photometric": "RGB"},
        {"kind": "bilateral", "size_mm": (250.0, 400.0)},
        {"kind": "unilateral", "size_mm": (160.0, 100.0)},
    ],
)
def test_invalid_film_requests_are_named_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(PhantomSpecError):
        render_film(seed=0, spacing_mm=0.8, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("bits", "photometric"), [(12, "MONOCHROME1"), (16, "MONOCHROME2")])
@pytest.mark.parametrize("kind", [*KINDS, "lateral"])
def test_film_round_trips_through_the_reader(
    tmp_path: Path, kind: str, bits: int, photometric: str
) -> None:
    film = render_film(kind, 6, spacing_mm=0.8, bits_stored=bits, photometric=photometric)
    ds = film_dataset(film, key=(6, kind), patient_id="F6", study_date=DAY)
    save_dicom(ds, tmp_path / "film.dcm")
    radiograph = read_radiograph(tmp_path / "film.dcm")
    assert np.array_equal(radiograph.pixels, film.bone_bright())
    meta = radiograph.meta
    assert meta.bits_stored == bits and meta.photometric_interpretation == photometric
    assert meta.view_position == ("LL" if kind == "lateral" else "PA")
    assert meta.pixel_spacing_mm == (0.8, 0.8) and meta.body_part_examined == "KNEE"
    back = pydicom.dcmread(tmp_path / "film.dcm")
    assert back.ImageLaterality == film.image_laterality
    expected = {"bilateral": "XR KNEE BILAT STANDING", "unilateral": "XR KNEE", "lateral": "LAT"}
    assert expected[kind] in back.StudyDescription


def test_write_films_labels_table(tmp_path: Path) -> None:
    records = write_films(tmp_path, 5, "mixed", 3, spacing_mm=0.8, label_noise=0.3)
    rows = _read_csv(tmp_path / "labels.csv")
    assert tuple(rows[0]) == FILM_LABEL_COLUMNS
    assert len(rows) == sum(len(r.knees) for r in records) and {r.kind for r in records} <= {
        "bilateral",
        "unilateral",
    }
    knees = [(record, knee) for record in records for knee in record.knees]
    for row, (record, knee) in zip(rows, knees, strict=True):
        path = tmp_path / row["file"]
        assert path == record.path and path.parent.parent.parent == tmp_path
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == row["sop_instance_uid"] == path.stem
        assert (row["side"], row["kind"]) == (knee.side, record.kind)
        assert 0 <= float(row["joint_x"]) < ds.Columns and 0 <= float(row["joint_y"]) < ds.Rows
        assert float(row["joint_x"]) == pytest.approx(knee.joint_x, abs=0.01)
        assert (int(row["kl_grade"]), int(row["true_kl_grade"])) == (knee.label, knee.grade)
        assert f"KL_{knee.side}={knee.label}" in ds.ImageComments


def test_lateral_films_are_listed_as_negatives_with_their_joint(tmp_path: Path) -> None:
    records = write_films(tmp_path, 2, "lateral", 1, spacing_mm=0.8)
    assert [r.knees for r in records] == [(), ()]
    rows = _read_csv(tmp_path / "labels.csv")
    assert [(row["sop_instance_uid"], row["side"], row["kind"]) for row in rows] == [
        (r.sop_instance_uid, "", "lateral") for r in records
    ]
    assert all(pydicom.dcmread(r.path).ViewPosition == "LL" for r in records)
    films = read_film_labels(tmp_path, tmp_path / "labels.csv")
    assert [film.knees for film in films] == [(), ()] and all(film.lateral for film in films)
    for film, record in zip(films, records, strict=True):
        assert record.lateral_joint is not None and film.lateral_joint is not None
        assert film.lateral_joint == pytest.approx(record.lateral_joint, abs=0.01)
        # The joint space lies between femur and tibia: bone above and below it, along the leg.
        ds = pydicom.dcmread(record.path)
        pixels = ds.pixel_array.astype(float)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            pixels = pixels.max() - pixels
        x, y = (round(v) for v in film.lateral_joint)
        reach = round(15 / 0.8)
        assert pixels[y - reach, x] > pixels[y, x] < pixels[y + reach, x]


def test_a_lateral_share_mixes_side_views_into_a_mixed_set(tmp_path: Path) -> None:
    plain = write_films(tmp_path / "plain", 40, "mixed", 6, spacing_mm=2.0)
    mixed = write_films(tmp_path / "mixed", 40, "mixed", 6, spacing_mm=2.0, lateral_share=0.2)
    laterals = {r.sop_instance_uid for r in mixed if r.kind == "lateral"}
    assert 2 <= len(laterals) <= 14 and "lateral" not in {r.kind for r in plain}
    negatives = [row for row in _read_csv(tmp_path / "mixed" / "labels.csv") if not row["side"]]
    assert {row["sop_instance_uid"] for row in negatives} == laterals


def test_nightly_films_layout_syntaxes_and_truth(tmp_path: Path) -> None:
    records = write_nightly_films(tmp_path, 8, 2, DAY, spacing_mm=0.8)
    for record in records:
        day, patient, study, name = record.path.relative_to(tmp_path).parts
        ds = pydicom.dcmread(record.path)
        assert (day, patient, study, name) == (
            DAY.isoformat(),
            ds.PatientID,
            ds.StudyInstanceUID,
            f"{ds.SOPInstanceUID}.dcm",
        )
        assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[record.transfer_syntax]
        assert ds.StudyDate == DAY.strftime("%Y%m%d")
    assert len({r.transfer_syntax for r in records}) >= 2
    rows = _read_csv(tmp_path / f"{DAY.isoformat()}.films.csv")
    truth = [(r.sop_instance_uid, k.side, k.grade) for r in records for k in r.knees]
    assert [(row["sop_instance_uid"], row["side"], int(row["true_kl_grade"])) for row in rows] == (
        truth
    )
    alone = film_file(
        tmp_path / "alone", 2, 5, "mixed", (2, 5, DAY.isoformat(), "film"), DAY, spacing_mm=0.8
    )
    assert alone.path.read_bytes() == records[5].path.read_bytes()


def test_cli_writes_films_and_labels(tmp_path: Path) -> None:
    args = ["phantoms", "--film", "bilateral", "--out", str(tmp_path), "--n", "2"]
    result = CliRunner().invoke(app, [*args, "--seed", "4", "--spacing-mm", "0.8"])
    assert result.exit_code == 0, result.output
    rows = _read_csv(tmp_path / "labels.csv")
    assert [row["side"] for row in rows] == ["R", "L", "R", "L"]
    bad = CliRunner().invoke(app, [*args, "--film", "oblique"])
    assert bad.exit_code != 0


def test_some_films_carry_metal() -> None:
    films = [render_film("unilateral", seed, spacing_mm=2.0) for seed in range(60)]
    share = np.mean([film.metal for film in films])
    assert 0.03 <= share <= 0.35
    assert not any(render_film("lateral", seed, spacing_mm=2.0).metal for seed in range(10))


def test_cli_writes_a_night_of_films(tmp_path: Path) -> None:
    args = ["phantoms", "--film", "mixed", "--out", str(tmp_path), "--n", "2", "--seed", "1"]
    result = CliRunner().invoke(app, [*args, "--spacing-mm", "0.8", "--batch-date", "2026-05-04"])
    assert result.exit_code == 0, result.output
    rows = _read_csv(tmp_path / "2026-05-04.films.csv")
    assert rows and all(row["file"].startswith("2026-05-04/") for row in rows)
