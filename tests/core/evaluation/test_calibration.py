"""Tests for calibration: temperature scaling fixes over- and under-confidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koa_core.evaluation.calibration import apply_temperature, fit_temperature
from koa_core.evaluation.metrics import expected_calibration_error


def _logits(n: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose calibrated scale is 1, multiplied by ``scale``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), y] += 1.0
    return logits * scale, y


@pytest.mark.parametrize(("scale", "over_confident"), [(4.0, True), (0.3, False)])
def test_fitted_temperature_undoes_the_scale_and_lowers_ece(
    scale: float, over_confident: bool
) -> None:
    val_logits, val_y = _logits(2000, scale, seed=0)
    test_logits, test_y = _logits(2000, scale, seed=1)
    temperature = fit_temperature(val_logits, val_y)
    assert (temperature > 1.0) == over_confident
    assert temperature == pytest.approx(scale, rel=0.25)
    before = expected_calibration_error(test_y, apply_temperature(test_logits, 1.0))
    after = expected_calibration_error(test_y, apply_temperature(test_logits, temperature))
    assert after < before / 2


def test_apply_temperature_keeps_ranking_and_sums_to_one() -> None:
    logits, _ = _logits(50, 2.0, seed=2)
    for temperature in (0.5, 1.0, 3.0):
        probs = apply_temperature(torch.from_numpy(logits).float(), temperature)
        assert probs.shape == (50, 5)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
        assert np.array_equal(probs.argmax(axis=1), logits.argmax(axis=1))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_apply_temperature_rejects_invalid_temperature(temperature: float) -> None:
    with pytest.raises(ValueError):
        apply_temperature(np.zeros((2, 5)), temperature)


@pytest.mark.parametrize(
    ("logits", "labels"),
    [(np.zeros((0, 5)), np.zeros(0, dtype=int)), (np.zeros((3, 5)), np.zeros(2, dtype=int))],
)
def test_fit_temperature_rejects_bad_shapes(logits: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fit_temperature(logits, labels)
