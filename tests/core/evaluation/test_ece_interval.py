"""Tests for ECE's bootstrap interval and the reliability table of the evaluation report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from koa_core.evaluation.metrics import (
    EvaluationMetrics,
    bootstrap_ece_interval,
    calibrated_ece_floor,
    evaluate_predictions,
    expected_calibration_error,
)
from koa_core.evaluation.report import write_evaluation_report


def _predictions(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    logits = rng.normal(0, 1, (n, 5))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_the_batched_interval_is_the_percentiles_of_resampled_eces() -> None:
    labels, probs = _predictions()
    low, high = bootstrap_ece_interval(labels, probs, n_bootstrap=200, seed=3) or (0.0, 0.0)
    index = np.random.default_rng(3).integers(0, len(labels), size=(200, len(labels)))
    eces = [expected_calibration_error(labels[i], probs[i]) for i in index]
    assert (low, high) == pytest.approx(tuple(np.percentile(eces, [2.5, 97.5])))
    assert low < expected_calibration_error(labels, probs) < high


def test_metrics_carry_both_ece_intervals_and_read_back(tmp_path: Path) -> None:
    labels, probs = _predictions()
    sharper = probs**2 / (probs**2).sum(axis=1, keepdims=True)
    metrics = evaluate_predictions(labels, probs, n_bootstrap=100, calibrated_probs=sharper)
    assert metrics.ece_ci is not None and metrics.ece_calibrated_ci is not None
    assert (
        metrics.ece_calibrated_ci[0]
        <= (metrics.ece_calibrated or 0)
        <= metrics.ece_calibrated_ci[1]
    )
    assert EvaluationMetrics.from_dict(metrics.to_dict()) == metrics
    old = {
        k: v
        for k, v in metrics.to_dict().items()
        if not k.startswith("ece_") or k == "ece_calibrated"
    }
    assert EvaluationMetrics.from_dict(old).ece_ci is None


def test_the_report_shows_the_ece_interval_and_a_reliability_table(tmp_path: Path) -> None:
    labels, probs = _predictions()
    metrics = evaluate_predictions(labels, probs, n_bootstrap=100, calibrated_probs=probs)
    paths = write_evaluation_report(
        metrics, tmp_path, title="t", y_true=labels, probs=probs, calibrated_probs=probs
    )
    report = paths.report_md.read_text()
    low, high = metrics.ece_ci or (0.0, 0.0)
    assert f"[{low:.3f}, {high:.3f}]" in report
    assert "Reliability, after temperature scaling" in report
    assert f"an ECE of about {metrics.ece_calibrated_floor:.3f} on these 300 images" in report
    rows = [line for line in report.splitlines() if line.startswith("| (")]
    assert sum(int(line.split("|")[2]) for line in rows) == len(labels)
    assert paths.reliability_png.stat().st_size > 0


def _calibrated_draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in probs])
    return labels, probs


def test_a_calibrated_models_ece_is_its_floor_and_the_floor_shrinks_with_n() -> None:
    small, large = _calibrated_draw(300, 1), _calibrated_draw(4800, 2)
    small_floor = calibrated_ece_floor(small[1], n_draws=400, seed=0)
    large_floor = calibrated_ece_floor(large[1], n_draws=400, seed=0)
    # Binned ECE of a calibrated model is noise of size ~1/sqrt(n): 16x the images, 1/4.
    assert large_floor == pytest.approx(small_floor / 4, rel=0.35)
    eces = [expected_calibration_error(*_calibrated_draw(300, seed)) for seed in range(10, 30)]
    assert np.median(eces) == pytest.approx(small_floor, rel=0.3)


def test_an_overconfident_model_sits_far_above_its_floor() -> None:
    labels, probs = _calibrated_draw(1200, 3)
    sharper = probs**3 / (probs**3).sum(axis=1, keepdims=True)
    metrics = evaluate_predictions(labels, probs, n_bootstrap=200, calibrated_probs=sharper)
    assert metrics.ece_calibrated_floor is not None and metrics.ece_calibrated is not None
    assert metrics.ece_calibrated > 3 * metrics.ece_calibrated_floor
    assert EvaluationMetrics.from_dict(metrics.to_dict()) == metrics
