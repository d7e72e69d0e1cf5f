"""Tests for split-conformal KL prediction sets: crepes agreement, coverage, never-empty sets."""

from __future__ import annotations

import numpy as np
import pytest
from crepes import ConformalClassifier
from crepes.extras import hinge

from koa_core.errors import ConformalError
from koa_core.evaluation.conformal import (
    ConformalCalibration,
    conformal_quantile,
    fit_conformal,
    prediction_sets,
    set_membership,
    set_quality,
)
from koa_core.evaluation.set_calibration import fit_sets
from koa_core.schema import GRADES, NUM_CLASSES

LEVELS = (0.80, 0.90, 0.95)


def simulated_knees(n: int, seed: int, sharpen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Exchangeable draws from a classifier whose softmax is the true grade distribution.

    Each knee has a latent severity; its grade probabilities are a softmax of how close each
    grade is to it, and its label is drawn from them: a perfectly calibrated classifier with
    realistic neighbouring-grade confusion. ``sharpen`` > 1 reports ``p ** sharpen``
    renormalised instead: the same ranking, overconfident.
    """
    rng = np.random.default_rng(seed)
    severity = rng.uniform(-0.5, 4.5, size=n)
    logits = -2.0 * (severity[:, None] - np.arange(NUM_CLASSES)[None, :]) ** 2
    truth = np.exp(logits - logits.max(axis=1, keepdims=True))
    truth /= truth.sum(axis=1, keepdims=True)
    labels = (truth.cumsum(axis=1) < rng.uniform(size=(n, 1))).sum(axis=1)
    reported = truth**sharpen
    return reported / reported.sum(axis=1, keepdims=True), np.minimum(labels, NUM_CLASSES - 1)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("n_calibration", [37, 1000])
def test_sets_equal_crepes_on_the_same_scores(level: float, n_calibration: int) -> None:
    cal_probs, cal_labels = simulated_knees(n_calibration, seed=1)
    test_probs, _ = simulated_knees(2000, seed=2)
    classes = np.array(GRADES)
    reference = ConformalClassifier().fit(hinge(cal_probs, classes, cal_labels))
    # Unsmoothed p-values are the deterministic split-conformal sets. (n + 1) * (1 - level)
    # is not an integer for these n; where it is, crepes keeps p == 1 - level, one more rank.
    expected = reference.predict_set(hinge(test_probs), confidence=level, smoothing=False).astype(
        bool
    )
    empty = ~expected.any(axis=1)
    expected[empty, test_probs[empty].argmax(axis=1)] = True

    calibration = fit_conformal(cal_probs, cal_labels, level)
    assert calibration.n_calibration == n_calibration and calibration.temperature is None
    np.testing.assert_array_equal(set_membership(test_probs, calibration), expected)
    assert expected.sum(axis=1).min() >= 1 and expected.sum(axis=1).max() > 1


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("sharpen", [1.0, 3.0], ids=["calibrated", "overconfident"])
def test_coverage_on_a_held_out_split_is_within_two_points_of_nominal(
    level: float, sharpen: float
) -> None:
    cal_probs, cal_labels = simulated_knees(4000, seed=10, sharpen=sharpen)
    test_probs, test_labels = simulated_knees(40_000, seed=11, sharpen=sharpen)
    for calibration in (
        fit_conformal(cal_probs, cal_labels, level),
        fit_sets(cal_probs, cal_labels, level),  # temperature-scaled first, as training does
    ):
        quality = set_quality(test_probs, test_labels, calibration)
        assert abs(quality.coverage - level) <= 0.02, (calibration, quality)
        assert 1.0 <= quality.mean_set_size < NUM_CLASSES
    if sharpen > 1:
        # Exchangeability is what carries the guarantee: a threshold calibrated on the
        # calibrated model's scores falls short on the overconfident one's, and this test
        # would catch it.
        honest = fit_conformal(*simulated_knees(4000, seed=10), level)
        assert set_quality(test_probs, test_labels, honest).coverage < level - 0.02


def test_temperature_from_fit_sets_undoes_known_sharpening() -> None:
    probs, labels = simulated_knees(4000, seed=3, sharpen=2.0)
    calibration = fit_sets(probs, labels, 0.9)
    assert calibration.temperature == pytest.approx(2.0, rel=0.1)


def test_a_set_is_never_empty_and_holds_the_most_probable_grade() -> None:
    calibration = ConformalCalibration(level=0.5, threshold=0.5, temperature=None, n_calibration=9)
    probs = np.array([[0.3, 0.25, 0.2, 0.15, 0.1], [0.05, 0.6, 0.3, 0.03, 0.02]])
    # Row 0: no grade reaches p >= 0.5, so the argmax is held; row 1 holds KL1 only.
    assert prediction_sets(probs, calibration) == [(0,), (1,)]


def test_too_few_calibration_knees_give_every_grade() -> None:
    probs, labels = simulated_knees(5, seed=4)
    calibration = fit_conformal(probs, labels, 0.95)  # ceil(6 * 0.95) = 6 > 5 knees
    assert calibration.threshold == 1.0
    assert prediction_sets(probs[:2], calibration) == [GRADES, GRADES]


def test_the_quantile_rank_is_the_finite_sample_one() -> None:
    scores = np.arange(1, 11) / 10.0  # 0.1 ... 1.0, n = 10
    assert conformal_quantile(scores, 0.8) == 0.9  # ceil(11 * 0.8) = 9th
    assert conformal_quantile(scores, 0.5) == 0.6  # ceil(11 * 0.5) = 6th
    assert conformal_quantile(np.arange(1, 1000) / 1000, 0.9) == 0.9  # 1000 * 0.9 = 900th


@pytest.mark.parametrize(
    ("probs", "labels", "level"),
    [
        (np.full((3, 5), 0.2), [0, 1], 0.9),
        (np.full((3, 4), 0.25), [0, 1, 2], 0.9),
        (np.full((2, 5), 0.2), [0, 5], 0.9),
        (np.full((2, 5), 0.2), [0, 1], 1.0),
        (np.full((0, 5), 0.2), [], 0.9),
    ],
    ids=["labels", "classes", "grade", "level", "empty"],
)
def test_unusable_inputs_are_conformal_errors(
    probs: np.ndarray, labels: list[int], level: float
) -> None:
    with pytest.raises(ConformalError):
        fit_conformal(probs, labels, level)
