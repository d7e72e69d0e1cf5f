"""How well a localizer finds the labelled knees: joint-centre error, handedness, misses.

Found knees scoring at least the acceptance score are matched one-to-one to the labelled
ones (Hungarian assignment on distance, ``scipy.optimize.linear_sum_assignment``); a pair
further apart than ``MATCH_DISTANCE_MM`` is no match: a missed knee and an invented one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from koa_core.localize.find import FoundKnee
from koa_core.localize.labels import KneeLabel

ACCEPT_SCORE = 0.5
MATCH_DISTANCE_MM = 40.0


@dataclass(frozen=True)
class FilmResult:
    """One film's labelled knees, what was found and its pixel spacing."""

    truth: tuple[KneeLabel, ...]
    found: tuple[FoundKnee, ...]
    spacing_mm: float


@dataclass(frozen=True)
class LocalizerMetrics:
    """Figures over a set of films; errors are over matched knees (None without any).

    ``handedness_accuracy`` counts a matched knee right when ``p_right_looking >= 0.5``
    exactly when it is a patient's right knee (films displayed the standard way).
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
    """The metrics of ``results``, counting found knees that score at least ``accept_score``."""
    errors: list[float] = []
    right = missed = invented = 0
    for result in results:
        accepted = [knee for knee in result.found if knee.score >= accept_score]
        pairs = match(result.truth, accepted, result.spacing_mm)
        missed += len(result.truth) - len(pairs)
        invented += len(accepted) - len(pairs)
        for t, f, error in pairs:
            errors.append(error)
            right += (accepted[f].p_right_looking >= 0.5) == (result.truth[t].side == "R")
    values = np.asarray(errors)
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
    )
