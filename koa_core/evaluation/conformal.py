"""Split-conformal prediction sets over the KL grades: the grades a knee may have, with a guarantee.

The recipe is LAC ("least ambiguous set-valued classifier", Sadinle, Lei & Wasserman 2019),
the standard split-conformal classifier:

1. on n calibration knees (the validation split, never seen in training) the score of each is
   ``1 - p(true grade)``;
2. the threshold ``q`` is the ``ceil((n + 1) * level)``-th smallest score, i.e. the empirical
   quantile at ``ceil((n + 1) * level) / n`` (the finite-sample correction), or 1 (every grade)
   when n is too small for that rank to exist;
3. a new knee's set holds every grade whose score ``1 - p(grade)`` is at most ``q``.

If the calibration and test knees are exchangeable, the set holds the true grade with
probability at least ``level`` (and at most ``level + 1/(n + 1)`` with continuous scores),
on average over knees: a marginal guarantee, not one for each knee, and no guarantee for
films unlike the validation set. LAC is chosen over APS (adaptive prediction sets) because
it gives the smallest mean set among valid split-conformal sets, is deterministic (exact
APS coverage needs randomised sets, and the same film must always get the same set), and
matches ``crepes`` with its ``hinge`` score, which the tests check. A set can be empty (no
grade is likely enough); koa then holds the most probable grade, so every knee has one.

Scores are computed on temperature-scaled probabilities (``calibration.Temperature``:
``softmax(log p / T)``, or the same on the head under a reader-noise layer) when the
calibration carries a temperature: callers always pass the model's raw softmax output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from koa_core.errors import ConformalError
from koa_core.evaluation.calibration import Temperature
from koa_core.schema import NUM_CLASSES

GradeSet = tuple[int, ...]


@dataclass(frozen=True)
class ConformalCalibration:
    """A fitted split-conformal classifier.

    Attributes:
        level: the nominal coverage, e.g. 0.90.
        threshold: the largest score ``1 - p(grade)`` a grade may have to enter a set
            (1.0: every grade, when the calibration set was too small for ``level``).
        temperature: the temperature applied to the probabilities before scoring; ``None``
            uses them as given.
        n_calibration: knees the threshold was calibrated on.
        temperature_reader_share: where the temperature applies (``Temperature``): 0 on
            the output, else on the head under a reader-noise layer of this share.
    """

    level: float
    threshold: float
    temperature: float | None
    n_calibration: int
    temperature_reader_share: float = 0.0


def _check_level(level: float) -> None:
    if not (0.0 < level < 1.0):
        raise ConformalError(f"conformal level must lie strictly between 0 and 1; got {level}")


def _probabilities(probabilities: npt.ArrayLike) -> npt.NDArray[np.float64]:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES:
        raise ConformalError(f"need probabilities of shape (N, {NUM_CLASSES}); got {p.shape}")
    return p


def calibrated(
    probabilities: npt.ArrayLike, temperature: float | None, reader_share: float = 0.0
) -> npt.NDArray[np.float64]:
    """``Temperature(temperature, reader_share)`` applied to (N, 5) probabilities, or ``p``
    itself without a temperature."""
    p = _probabilities(probabilities)
    if temperature is None:
        return p
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConformalError(f"temperature must be positive and finite; got {temperature}")
    return Temperature(temperature, reader_share).apply(p)


def conformal_quantile(scores: npt.ArrayLike, level: float) -> float:
    """The ``ceil((n + 1) * level)``-th smallest of ``n`` scores; 1.0 when that exceeds n.

    Raises:
        ConformalError: no scores, or ``level`` outside (0, 1).
    """
    _check_level(level)
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if values.size == 0:
        raise ConformalError("cannot calibrate prediction sets on no knees")
    # The tolerance keeps float rounding of an exact product (1000 * 0.9) from adding a rank.
    rank = math.ceil((values.size + 1) * level - 1e-9)
    return 1.0 if rank > values.size else float(values[rank - 1])


def fit_conformal(
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    level: float,
    *,
    temperature: float | None = None,
    temperature_reader_share: float = 0.0,
) -> ConformalCalibration:
    """Calibrate LAC prediction sets on held-out knees (the validation split).

    Args:
        probabilities: the model's softmax on the calibration knees, shape (N, 5).
        labels: their true KL grades, shape (N,).
        level: nominal coverage in (0, 1).
        temperature: applied before scoring (fitted on the same split); ``None``: none.
        temperature_reader_share: where it applies (``ConformalCalibration``).

    Raises:
        ConformalError: shapes disagree, no knees, a grade outside 0-4, or a bad level.
    """
    p = calibrated(probabilities, temperature, temperature_reader_share)
    y = np.asarray(labels).astype(np.int64)
    if y.shape != (p.shape[0],):
        raise ConformalError(f"need one label per row; got {y.shape} for {p.shape}")
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise ConformalError(f"KL grades must lie in 0-{NUM_CLASSES - 1}")
    scores = 1.0 - p[np.arange(y.size), y]
    threshold = conformal_quantile(scores, level)
    return ConformalCalibration(
        level, threshold, temperature, int(y.size), temperature_reader_share
    )


def set_membership(
    probabilities: npt.ArrayLike, calibration: ConformalCalibration
) -> npt.NDArray[np.bool_]:
    """(N, 5) booleans: grade ``g`` is in knee ``i``'s set; an empty row holds its argmax."""
    p = calibrated(probabilities, calibration.temperature, calibration.temperature_reader_share)
    members = (1.0 - p) <= calibration.threshold
    empty = ~members.any(axis=1)
    members[empty, p[empty].argmax(axis=1)] = True
    return np.asarray(members, dtype=np.bool_)


def prediction_sets(
    probabilities: npt.ArrayLike, calibration: ConformalCalibration
) -> list[GradeSet]:
    """Each knee's prediction set: the KL grades, ascending; never empty.

    Args:
        probabilities: the model's softmax, shape (N, 5) (raw: the calibration applies
            its own temperature).
        calibration: from ``fit_conformal``.
    """
    members = set_membership(probabilities, calibration)
    return [tuple(int(g) for g in np.flatnonzero(row)) for row in members]


@dataclass(frozen=True)
class SetQuality:
    """How prediction sets did on labelled knees: the share that held the truth, mean size."""

    coverage: float
    mean_set_size: float
    n: int


def set_quality(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, calibration: ConformalCalibration
) -> SetQuality:
    """Empirical coverage and mean set size of ``calibration``'s sets on labelled knees.

    Raises:
        ConformalError: shapes disagree or there are no knees.
    """
    members = set_membership(probabilities, calibration)
    y = np.asarray(labels).astype(np.int64)
    if y.shape != (members.shape[0],) or y.size == 0:
        raise ConformalError(f"need N >= 1 labels for {members.shape[0]} rows; got {y.shape}")
    covered = members[np.arange(y.size), y]
    return SetQuality(float(covered.mean()), float(members.sum(axis=1).mean()), int(y.size))
