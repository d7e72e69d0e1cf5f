"""From a whole film to knee inputs: ROIs where the joints are, sides, and each refusal.

The knees are given by a finder that returns the film's true joints (the localizer's own
accuracy is tested with the localizer): what is tested here is everything after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from koa_core.config import Settings
from koa_core.errors import (
    KneeTruncatedError,
    LateralityConflictError,
    NoKneeFoundError,
    NotFrontalViewError,
)
from koa_core.localize.knee_inputs import KneeFinder, load_knee_inputs
from koa_core.phantom import Film, film_dataset, render_film, save_dicom

SIZE = 64
SPACING_MM = 0.5


@dataclass(frozen=True)
class Found:
    x: float
    y: float
    score: float
    p_right_looking: float


@dataclass(frozen=True)
class Seen:
    knees: list[Found]
    p_lateral: float | None = None


def truth_finder(
    film: Film, *, score: float = 0.95, mirrored: bool = False, p_lateral: float | None = None
) -> KneeFinder:
    """The film's labelled joints as a localizer would report them, in decoded pixels."""

    def find(pixels: npt.NDArray[np.float32], spacing_mm: float) -> Seen:
        scale = film.spacing_mm / spacing_mm
        right_looking = {"R": 0.97, "L": 0.03}
        knees = [
            Found(
                knee.joint_x * scale,
                knee.joint_y * scale,
                score,
                1.0 - right_looking[knee.side] if mirrored else right_looking[knee.side],
            )
            for knee in film.knees
        ]
        return Seen(knees, p_lateral)

    return find


def _write(tmp_path: Path, film: Film, name: str = "film.dcm") -> Path:
    ds = film_dataset(film, key=(name,), patient_id="P1", study_date=date(2026, 1, 1))
    path = tmp_path / name
    save_dicom(ds, path)
    return path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bilateral_film_gives_right_then_left_at_their_joints(tmp_path: Path, seed: int) -> None:
    film = render_film("bilateral", seed, spacing_mm=SPACING_MM)
    inputs = load_knee_inputs(_write(tmp_path, film), SIZE, truth_finder(film))
    assert [knee.side for knee in inputs.knees] == ["R", "L"]
    truth = {knee.side: knee for knee in film.knees}
    for knee in inputs.knees:
        assert knee.joint_x == pytest.approx(truth[knee.side].joint_x, abs=0.01)
        assert knee.joint_y == pytest.approx(truth[knee.side].joint_y, abs=0.01)
        top, bottom, left, right = knee.box
        assert bottom - top == pytest.approx(140.0 / SPACING_MM, abs=1)
        assert (left + right) / 2 == pytest.approx(knee.joint_x, abs=1)
        assert knee.flipped is (knee.side == "L")
        assert knee.pixels.shape == (SIZE, SIZE) and knee.pixels.dtype == np.uint8
        assert knee.side_evidence == "position"


@pytest.mark.parametrize("side", ["R", "L"])
def test_unilateral_film_with_the_joint_off_centre_takes_the_header_side(
    tmp_path: Path, side: str
) -> None:
    film = render_film("unilateral", 5, side=side, spacing_mm=SPACING_MM)
    inputs = load_knee_inputs(_write(tmp_path, film), SIZE, truth_finder(film))
    (knee,) = inputs.knees
    assert (knee.side, knee.side_evidence) == (side, "header")


def test_mirrored_film_is_a_laterality_conflict(tmp_path: Path) -> None:
    film = render_film("bilateral", 4, spacing_mm=SPACING_MM)
    with pytest.raises(LateralityConflictError):
        load_knee_inputs(_write(tmp_path, film), SIZE, truth_finder(film, mirrored=True))


def test_low_scores_are_no_knee(tmp_path: Path) -> None:
    film = render_film("unilateral", 6, spacing_mm=SPACING_MM)
    with pytest.raises(NoKneeFoundError):
        load_knee_inputs(_write(tmp_path, film), SIZE, truth_finder(film, score=0.2))


@pytest.mark.parametrize(("p_lateral", "refused"), [(0.9, True), (0.5, True), (0.3, False)])
def test_a_film_the_localizer_calls_lateral_is_not_frontal_whatever_its_header(
    tmp_path: Path, p_lateral: float, refused: bool
) -> None:
    film = render_film("unilateral", 8, spacing_mm=SPACING_MM)  # its header says PA
    finder = truth_finder(film, p_lateral=p_lateral)
    path = _write(tmp_path, film)
    if not refused:
        assert len(load_knee_inputs(path, SIZE, finder).knees) == 1
        return
    with pytest.raises(NotFrontalViewError, match=f"lateral view \\(localizer {p_lateral:.2f}"):
        load_knee_inputs(path, SIZE, finder)
    stricter = Settings(lateral_view_score=0.95)
    assert len(load_knee_inputs(path, SIZE, finder, settings=stricter).knees) == 1


def test_a_knee_at_the_edge_of_the_film_is_truncated(tmp_path: Path) -> None:
    film = render_film("unilateral", 7, spacing_mm=SPACING_MM)
    (truth,) = film.knees

    def at_the_edge(pixels: npt.NDArray[np.float32], spacing_mm: float) -> Seen:
        side = {"R": 0.97, "L": 0.03}[truth.side]
        return Seen([Found(2.0, truth.joint_y * film.spacing_mm / spacing_mm, 0.9, side)])

    with pytest.raises(KneeTruncatedError, match="off the film"):
        load_knee_inputs(_write(tmp_path, film), SIZE, at_the_edge)
    relaxed = Settings(max_roi_off_film=0.6)
    (knee,) = load_knee_inputs(_write(tmp_path, film), SIZE, at_the_edge, settings=relaxed).knees
    assert knee.box[2] < 0
