"""Tests for calibration: temperature scaling fixes over- and under-confidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from koa_core.evaluation.calibration import (
    Temperature,
    apply_temperature,
    fit_probability_temperature,
    fit_temperature,
    head_logits,
)
from koa_core.evaluation.conformal import calibrated
from koa_core.evaluation.metrics import expected_calibration_error
from koa_core.schema import adjacent_mixing

READER_SHARE = 0.1


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


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def _reader_noise_knees(
    n: int, label_share: float, head_scale: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A reader-noise grader's output and labels: true grades from calibrated head logits,
    recorded through ``label_share`` adjacent-grade noise; the head's logits scaled by
    ``head_scale`` (under 1: an under-confident head, as trained under the layer)."""
    rng = np.random.default_rng(seed)
    logits, _ = _logits(n, 3.0, seed)
    truth = np.array([rng.choice(5, p=row) for row in _softmax(logits)])
    recorded_rows = adjacent_mixing(label_share)[truth]
    labels = np.array([rng.choice(5, p=row) for row in recorded_rows])
    return _softmax(logits * head_scale) @ adjacent_mixing(READER_SHARE), labels


@pytest.mark.parametrize("share", [0.0, 0.05, READER_SHARE, 0.3])
def test_head_logits_undo_the_reader_noise_layer(share: float) -> None:
    head = _softmax(_logits(40, 2.0, seed=3)[0])
    recovered = head_logits(head @ adjacent_mixing(share), share)
    np.testing.assert_allclose(_softmax(recovered), head, atol=1e-9)


def test_a_temperature_on_the_output_is_softmax_of_log_p_over_t() -> None:
    probs = _softmax(_logits(30, 2.0, seed=4)[0])
    expected = apply_temperature(np.log(probs), 1.7)
    np.testing.assert_allclose(Temperature(1.7).apply(probs), expected, atol=1e-12)
    np.testing.assert_allclose(calibrated(probs, 1.7), expected, atol=1e-12)


def test_a_temperature_on_the_head_keeps_the_layers_cap() -> None:
    probs = _softmax(_logits(30, 2.0, seed=5)[0]) @ adjacent_mixing(READER_SHARE)
    sharpened = Temperature(0.05, READER_SHARE).apply(probs)
    np.testing.assert_allclose(sharpened.sum(axis=1), 1.0, atol=1e-9)
    assert sharpened.max() <= 1.0 - READER_SHARE + 1e-9 < Temperature(0.05).apply(probs).max()
    np.testing.assert_allclose(calibrated(probs, 0.05, READER_SHARE), sharpened, atol=1e-12)


def test_labels_as_noisy_as_the_layer_put_the_temperature_on_the_head() -> None:
    val_probs, val_labels = _reader_noise_knees(3000, READER_SHARE, 0.5, seed=6)
    test_probs, test_labels = _reader_noise_knees(3000, READER_SHARE, 0.5, seed=7)
    fitted = fit_probability_temperature(val_probs, val_labels, READER_SHARE)
    assert fitted.reader_share == READER_SHARE
    assert fitted.value == pytest.approx(0.5, rel=0.15)
    on_output = Temperature(fit_probability_temperature(val_probs, val_labels).value)
    head_ece = expected_calibration_error(test_labels, fitted.apply(test_probs))
    output_ece = expected_calibration_error(test_labels, on_output.apply(test_probs))
    assert head_ece < output_ece


def test_labels_cleaner_than_the_layer_put_the_temperature_on_the_output() -> None:
    # A layer that says 10 % of labels move, on labels that never do: its cap (0.9) is
    # too low for the clear knees, which only a temperature on the output can lift.
    val_probs, val_labels = _reader_noise_knees(3000, 0.0, 1.0, seed=8)
    fitted = fit_probability_temperature(val_probs, val_labels, READER_SHARE)
    assert fitted == Temperature(fitted.value, 0.0) and fitted.value < 1.0


def test_without_a_layer_only_the_output_temperature_is_tried() -> None:
    val_probs, val_labels = _reader_noise_knees(500, READER_SHARE, 0.5, seed=9)
    fitted = fit_probability_temperature(val_probs, val_labels)
    assert fitted.reader_share == 0.0
    assert fitted.value == pytest.approx(fit_temperature(np.log(val_probs), val_labels))
