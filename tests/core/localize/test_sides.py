"""Knee sides: position on bilateral films, header on one-knee films, anatomy as witness."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from koa_core.errors import LateralityConflictError, LateralityUnknownError, NoKneeFoundError
from koa_core.localize.sides import place_knees

FILM = Path("film.dcm")


@dataclass(frozen=True)
class Found:
    x: float
    y: float
    score: float
    p_right_looking: float


def _place(found: list[Found], laterality: str | None) -> list[tuple[str, float, str]]:
    knees = place_knees(FILM, found, laterality, min_score=0.5, confidence=0.8)
    return [(knee.side, knee.x, knee.side_evidence) for knee in knees]


@pytest.mark.parametrize("order", ["left_first", "right_first"])
def test_bilateral_right_knee_is_on_the_viewers_left(order: str) -> None:
    viewer_left, viewer_right = Found(300, 500, 0.9, 0.97), Found(900, 520, 0.95, 0.02)
    found = [viewer_left, viewer_right] if order == "left_first" else [viewer_right, viewer_left]
    assert _place(found, None) == [("R", 300, "position"), ("L", 900, "position")]


def test_mirrored_bilateral_film_is_a_conflict() -> None:
    with pytest.raises(LateralityConflictError, match="mirrored"):
        _place([Found(300, 500, 0.9, 0.03), Found(900, 500, 0.9, 0.96)], None)


def test_bilateral_film_with_a_one_side_header_is_a_conflict() -> None:
    with pytest.raises(LateralityConflictError, match="ImageLaterality R"):
        _place([Found(300, 500, 0.9, 0.97), Found(900, 500, 0.9, 0.02)], "R")


@pytest.mark.parametrize(("laterality", "p_right"), [("R", 0.95), ("L", 0.05), ("R", 0.5)])
def test_one_knee_takes_the_header_side(laterality: str, p_right: float) -> None:
    assert _place([Found(400, 300, 0.9, p_right)], laterality) == [(laterality, 400, "header")]


@pytest.mark.parametrize(("laterality", "p_right"), [("R", 0.05), ("L", 0.95)])
def test_one_knee_whose_anatomy_contradicts_the_header_is_a_conflict(
    laterality: str, p_right: float
) -> None:
    with pytest.raises(LateralityConflictError, match=f"ImageLaterality {laterality}"):
        _place([Found(400, 300, 0.9, p_right)], laterality)


@pytest.mark.parametrize(("p_right", "side"), [(0.9, "R"), (0.1, "L")])
def test_one_knee_without_header_side_takes_the_anatomy(p_right: float, side: str) -> None:
    assert _place([Found(400, 300, 0.9, p_right)], None) == [(side, 400, "anatomy")]


def test_one_knee_without_header_and_unsure_anatomy_is_refused() -> None:
    with pytest.raises(LateralityUnknownError):
        _place([Found(400, 300, 0.9, 0.6)], None)


def test_weak_candidates_are_no_knee() -> None:
    with pytest.raises(NoKneeFoundError, match=r"0\.30"):
        _place([Found(400, 300, 0.3, 0.9)], "R")
    with pytest.raises(NoKneeFoundError):
        _place([], None)


def test_a_weak_second_candidate_does_not_make_a_bilateral_film() -> None:
    assert _place([Found(400, 300, 0.9, 0.9), Found(900, 300, 0.2, 0.1)], "R") == [
        ("R", 400, "header")
    ]
