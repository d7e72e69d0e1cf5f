"""The localizer's figures: matched errors, misses, inventions and named side views."""

from __future__ import annotations

import pytest

from koa_core.localize.evaluate import FilmResult, summarise
from koa_core.localize.find import FoundKnee
from koa_core.localize.labels import KneeLabel

RIGHT = KneeLabel("R", 100.0, 100.0)


def _found(x: float, score: float = 0.9, right: float = 0.9) -> FoundKnee:
    return FoundKnee(x, 100.0, score, right)


def test_a_knee_found_near_its_label_is_matched_with_its_error_and_side() -> None:
    metrics = summarise([FilmResult((RIGHT,), (_found(103.0),), 0.5, p_lateral=0.1)])
    assert (metrics.n_matched, metrics.missed, metrics.invented) == (1, 0, 0)
    assert metrics.median_error_mm == pytest.approx(1.5)
    assert metrics.handedness_accuracy == 1.0
    assert (metrics.lateral_flagged, metrics.frontal_flagged) == (0, 0)


def test_far_or_weak_candidates_are_a_miss_and_an_invention() -> None:
    far = FilmResult((RIGHT,), (_found(400.0),), 0.5)
    weak = FilmResult((RIGHT,), (_found(100.0, score=0.2),), 0.5)
    metrics = summarise([far, weak])
    assert (metrics.n_matched, metrics.missed, metrics.invented) == (0, 2, 1)
    assert metrics.lateral_flagged is None  # no view head: it cannot tell


def test_a_film_named_lateral_gives_no_knee_as_the_night_quarantines_it() -> None:
    side_view = FilmResult((), (_found(100.0),), 0.5, lateral=True, p_lateral=0.9)
    frontal_named = FilmResult((RIGHT,), (_found(100.0),), 0.5, p_lateral=0.7)
    side_view_missed = FilmResult((), (), 0.5, lateral=True, p_lateral=0.2)
    metrics = summarise([side_view, frontal_named, side_view_missed])
    assert (metrics.missed, metrics.invented) == (1, 0)
    assert (metrics.n_lateral, metrics.lateral_flagged, metrics.frontal_flagged) == (2, 1, 1)
