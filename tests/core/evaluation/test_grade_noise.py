"""Tests for the grade-noise calibration: a temperature, then a share to neighbouring grades."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koa_core.evaluation.calibration import (
    apply_temperature,
    fit_grade_noise,
    fit_temperature,
)
from koa_core.evaluation.evaluate import evaluate_probabilities
from koa_core.evaluation.metrics import EvaluationMetrics, expected_calibration_error
from koa_core.schema import adjacent_mixing
from koa_core.training.loss import adjacent_targets

NOISE = 0.15


def _knees(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities calibrated for the true grade, clear and ambiguous knees mixed."""
    rng = np.random.default_rng(seed)
    grades = rng.integers(0, 5, n)
    logits = rng.normal(0.0, 1.0, (n, 5))
    logits[np.arange(n), grades] += rng.choice([1.5, 6.0], n)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    true = np.array([rng.choice(5, p=row) for row in probs])
    return probs, true


def _reader(true: np.ndarray, share: float, seed: int) -> np.ndarray:
    """The grade a reader records: with probability ``share`` a neighbouring one."""
    rng = np.random.default_rng(seed)
    mixing = adjacent_mixing(share)
    return np.array([rng.choice(5, p=mixing[grade]) for grade in true])


def test_the_mixing_moves_the_share_to_the_neighbours_only() -> None:
    mixing = adjacent_mixing(0.2)
    np.testing.assert_allclose(mixing.sum(axis=1), 1.0)
    assert mixing[0, 1] == pytest.approx(0.2) and mixing[2, 1] == pytest.approx(0.1)
    assert mixing[2, 0] == 0.0 and mixing[4, 4] == pytest.approx(0.8)


def test_training_targets_are_the_rows_of_the_same_mixing() -> None:
    targets = adjacent_targets(torch.tensor([0, 2, 4]), 0.2)
    np.testing.assert_allclose(targets.numpy(), adjacent_mixing(0.2)[[0, 2, 4]], atol=1e-7)


def test_labels_with_adjacent_noise_are_fitted_with_their_share() -> None:
    probs, true = _knees(4000, seed=1)
    labels = _reader(true, NOISE, seed=2)
    fit = fit_grade_noise(np.log(probs), labels)
    assert fit.adjacent_share == pytest.approx(NOISE, abs=0.03)
    assert fit.temperature == pytest.approx(1.0, abs=0.15)


def test_the_noise_term_calibrates_where_one_temperature_cannot() -> None:
    val_probs, val_true = _knees(3000, seed=3)
    test_probs, test_true = _knees(3000, seed=4)
    val_labels, test_labels = _reader(val_true, NOISE, 5), _reader(test_true, NOISE, 6)
    temperature = fit_temperature(np.log(val_probs), val_labels)
    tempered = expected_calibration_error(
        test_labels, apply_temperature(np.log(test_probs), temperature)
    )
    noise = fit_grade_noise(np.log(val_probs), val_labels)
    mixed = expected_calibration_error(test_labels, noise.apply(np.log(test_probs)))
    assert mixed < 0.03 < tempered


def test_clean_labels_get_no_noise_term() -> None:
    probs, true = _knees(3000, seed=7)
    assert fit_grade_noise(np.log(probs), true).adjacent_share <= 0.02


def test_an_evaluation_reports_the_ece_after_the_noise_term() -> None:
    val_probs, val_true = _knees(1500, seed=8)
    test_probs, test_true = _knees(1500, seed=9)
    evaluation = evaluate_probabilities(
        _reader(test_true, NOISE, 10),
        test_probs,
        val_labels=_reader(val_true, NOISE, 11),
        val_probs=val_probs,
        n_bootstrap=50,
    )
    metrics = evaluation.metrics
    assert metrics.ece_calibrated is not None and metrics.ece_grade_noise is not None
    assert metrics.ece_grade_noise < metrics.ece_calibrated
    assert metrics.grade_noise_share == pytest.approx(NOISE, abs=0.04)
    low, high = metrics.ece_grade_noise_ci or (np.nan, np.nan)
    assert low <= metrics.ece_grade_noise <= high
    assert EvaluationMetrics.from_dict(metrics.to_dict()) == metrics


def test_metrics_recorded_before_the_noise_term_still_load() -> None:
    probs, true = _knees(300, seed=12)
    recorded = evaluate_probabilities(true, probs, n_bootstrap=0).metrics.to_dict()
    for key in ("ece_grade_noise", "ece_grade_noise_ci", "grade_noise_share"):
        recorded.pop(key)
    assert EvaluationMetrics.from_dict(recorded).ece_grade_noise is None


def test_the_fit_refuses_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="N labels"):
        fit_grade_noise(np.zeros((3, 5)), np.zeros(2, dtype=int))
