"""How well a localizer finds the labelled knees: joint-centre error, handedness, misses,
and how well it tells lateral views from frontal films.

Found knees scoring at least the acceptance score are matched one-to-one to the labelled
ones (Hungarian assignment on distance, ``scipy.optimize.linear_sum_assignment``); a pair
further apart than ``MATCH_DISTANCE_MM`` is no match: a missed knee and an invented one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from koa_core.config import Settings
from koa_core.localize.find import FoundKnee
from koa_core.localize.labels import KneeLabel

ACCEPT_SCORE = 0.5
# KOA_LATERAL_VIEW_SCORE's default: the figures say what the night would do.
LATERAL_SCORE: float = Settings.model_fields["lateral_view_score"].default
MATCH_DISTANCE_MM = 40.0


@dataclass(frozen=True)
class FilmResult:
    """One film's labelled knees, what was found and its pixel spacing; whether it is a
    lateral view, and the localizer's probability that it is (None without a view head)."""

    truth: tuple[KneeLabel, ...]
    found: tuple[FoundKnee, ...]
    spacing_mm: float
    lateral: bool = False
    p_lateral: float | None = None


@dataclass(frozen=True)
class LocalizerMetrics:
    """Figures over a set of films; errors are over matched knees (None without any).

    ``handedness_accuracy`` counts a matched knee right when ``p_right_looking >= 0.5``
    exactly when it is a patient's right knee (films displayed the standard way).
    ``lateral_flagged`` of the ``n_lateral`` lateral views and ``frontal_flagged`` of the
    other films had ``p_lateral >= LATERAL_SCORE`` (both None without a view head).
    """

    n_films: int
    n_knees: int
    n_matched: int
    missed: int
    invented: int
    median_error_mm: float | None
    p99_error_mm: float | None
    max_error_mm: float | None
    handedness_accuracy: float | None
    accept_score: float
    n_lateral: int = 0
    lateral_flagged: int | None = None
    frontal_flagged: int | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def match(
    truth: Sequence[KneeLabel], found: Sequence[FoundKnee], spacing_mm: float
) -> list[tuple[int, int, float]]:
    """``(truth index, found index, error mm)`` of the matched pairs."""
    if not truth or not found:
        return []
    distance = np.array(
        [[np.hypot(f.x - t.x, f.y - t.y) * spacing_mm for f in found] for t in truth]
    )
    rows, columns = linear_sum_assignment(distance)
    return [
        (int(r), int(c), float(distance[r, c]))
        for r, c in zip(rows, columns, strict=True)
        if distance[r, c] <= MATCH_DISTANCE_MM
    ]


def summarise(
    results: Sequence[FilmResult], accept_score: float = ACCEPT_SCORE
) -> LocalizerMetrics:
    """The metrics of ``results``, counting found knees that score at least ``accept_score``.

    A film the view head names lateral gives no knee, as in the night (which quarantines
    it): knees on a side view are not invented, a frontal film's knees are missed.
    """
    errors: list[float] = []
    right = missed = invented = 0
    for result in results:
        named_lateral = (result.p_lateral or 0.0) >= LATERAL_SCORE
        found = () if named_lateral else result.found
        accepted = [knee for knee in found if knee.score >= accept_score]
        pairs = match(result.truth, accepted, result.spacing_mm)
        missed += len(result.truth) - len(pairs)
        invented += len(accepted) - len(pairs)
        for t, f, error in pairs:
            errors.append(error)
            right += (accepted[f].p_right_looking >= 0.5) == (result.truth[t].side == "R")
    values = np.asarray(errors)
    has_view = bool(results) and all(r.p_lateral is not None for r in results)
    flagged = [r.lateral for r in results if (r.p_lateral or 0.0) >= LATERAL_SCORE]
    return LocalizerMetrics(
        n_films=len(results),
        n_knees=sum(len(result.truth) for result in results),
        n_matched=len(errors),
        missed=missed,
        invented=invented,
        median_error_mm=float(np.median(values)) if errors else None,
        p99_error_mm=float(np.percentile(values, 99)) if errors else None,
        max_error_mm=float(values.max()) if errors else None,
        handedness_accuracy=right / len(errors) if errors else None,
        accept_score=accept_score,
        n_lateral=sum(result.lateral for result in results),
        lateral_flagged=sum(flagged) if has_view else None,
        frontal_flagged=len(flagged) - sum(flagged) if has_view else None,
    )
