"""Tests for metrics: hand-worked cases, sklearn agreement, bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from koa_core.evaluation.metrics import (
    EvaluationMetrics,
    batched_auc,
    batched_qwk,
    evaluate_predictions,
    expected_calibration_error,
)
from koa_core.schema import p_koa

# Four knees, true grades 0-3; the KL1 knee is over-graded as KL2.
Y_FOUR = np.array([0, 1, 2, 3])
P_FOUR = np.array(
    [
        [0.90, 0.00, 0.10, 0.00, 0.00],  # p_koa 0.1, predicted KL0
        [0.30, 0.10, 0.60, 0.00, 0.00],  # p_koa 0.6, predicted KL2
        [0.35, 0.25, 0.40, 0.00, 0.00],  # p_koa 0.4, predicted KL2
        [0.05, 0.05, 0.00, 0.90, 0.00],  # p_koa 0.9, predicted KL3
    ]
)


def _fake_predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_four_sample_case_matches_hand_computation() -> None:
    m = evaluate_predictions(Y_FOUR, P_FOUR, threshold=0.5, n_bootstrap=0)
    assert m.accuracy == pytest.approx(3 / 4)
    assert m.mae == pytest.approx(1 / 4)
    # Quadratic weights: observed sum(w*O) = (1-2)^2 = 1; expected sum(w*E) = 40 / 4 = 10.
    assert m.qwk == pytest.approx(1 - 1 / 10)
    expected_cm = np.zeros((5, 5), dtype=int)
    expected_cm[[0, 1, 2, 3], [0, 2, 2, 3]] = 1
    assert np.array_equal(np.array(m.confusion_matrix), expected_cm)
    # Positive/negative pairs (0.4, 0.1) yes, (0.4, 0.6) no, (0.9, 0.1) yes, (0.9, 0.6) yes.
    assert m.auc_koa == pytest.approx(3 / 4)
    assert m.sensitivity_koa == pytest.approx(1 / 2)
    assert m.specificity_koa == pytest.approx(1 / 2)
    assert m.brier_koa == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)


def test_absent_grade_gives_none_auc_with_a_note() -> None:
    m = evaluate_predictions(Y_FOUR, P_FOUR, n_bootstrap=0)
    assert m.per_class[4].auc_roc is None
    assert m.per_class[4].support == 0
    assert all(row.auc_roc is not None for row in m.per_class[:4])
    assert m.auc_macro == pytest.approx(np.mean([row.auc_roc for row in m.per_class[:4]]))
    assert any("KL4" in note for note in m.notes)


@pytest.mark.parametrize("grade", range(5))
def test_perfect_predictions(grade: int) -> None:
    y = np.array([0, 1, 2, 3, 4, grade])
    probs = np.eye(5)[y] * 0.95 + 0.01
    m = evaluate_predictions(y, probs, n_bootstrap=50)
    assert m.accuracy == 1.0
    assert m.qwk == pytest.approx(1.0)
    assert m.mae == 0.0
    assert m.auc_koa == pytest.approx(1.0)
    assert m.auc_macro == pytest.approx(1.0)
    assert np.array_equal(np.array(m.confusion_matrix), np.diag(np.bincount(y, minlength=5)))
    assert m.notes == ()


def test_single_grade_split_does_not_crash() -> None:
    y = np.zeros(6, dtype=int)
    probs = np.tile([0.8, 0.05, 0.05, 0.05, 0.05], (6, 1))
    m = evaluate_predictions(y, probs, n_bootstrap=20)
    assert m.qwk is None and m.auc_koa is None and m.auc_macro is None
    assert m.sensitivity_koa is None and m.specificity_koa == 1.0
    assert m.auc_koa_ci is None
    assert m.notes
    json.dumps(m.to_dict())


@pytest.mark.parametrize(
    ("y", "probs"),
    [
        (np.array([0, 1]), np.full((3, 5), 0.2)),
        (np.array([0, 1]), np.full((2, 4), 0.25)),
        (np.array([0, 5]), np.full((2, 5), 0.2)),
        (np.array([], dtype=int), np.zeros((0, 5))),
    ],
)
def test_rejects_malformed_input(y: np.ndarray, probs: np.ndarray) -> None:
    with pytest.raises(ValueError):
        evaluate_predictions(y, probs)


def test_to_dict_is_json_and_round_trips() -> None:
    y, probs = _fake_predictions(200, seed=1)
    m = evaluate_predictions(y, probs, n_bootstrap=100, calibrated_probs=probs)
    data = json.loads(json.dumps(m.to_dict()))
    assert EvaluationMetrics.from_dict(data) == m
    assert m.ece_calibrated == pytest.approx(m.ece)


def test_ece_two_bin_hand_case() -> None:
    probs = np.array(
        [
            [0.90, 0.10, 0.00, 0.00, 0.00],  # confidence 0.9, correct
            [0.70, 0.30, 0.00, 0.00, 0.00],  # confidence 0.7, wrong
            [0.40, 0.30, 0.30, 0.00, 0.00],  # confidence 0.4, correct
            [0.30, 0.25, 0.25, 0.20, 0.00],  # confidence 0.3, wrong
        ]
    )
    y = np.array([0, 1, 0, 1])
    # (0, 0.5]: accuracy 0.5, confidence 0.35; (0.5, 1]: accuracy 0.5, confidence 0.8.
    expected = 0.5 * abs(0.5 - 0.35) + 0.5 * abs(0.5 - 0.8)
    assert expected_calibration_error(y, probs, n_bins=2) == pytest.approx(expected)


def test_ece_is_zero_when_confidence_equals_accuracy() -> None:
    probs = np.tile([0.5, 0.125, 0.125, 0.125, 0.125], (4, 1))
    assert expected_calibration_error(np.array([0, 0, 1, 2]), probs) == pytest.approx(0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_statistics_equal_sklearn(seed: int) -> None:
    y, probs = _fake_predictions(60, seed)
    # Rounding creates ties, which the rank form must count one half as sklearn does.
    probs = np.round(probs, 1)
    index = np.random.default_rng(seed).integers(0, 60, size=(8, 60))
    qwk = batched_qwk(y[index], probs.argmax(axis=1)[index])
    auc = batched_auc(y[index] >= 2, p_koa(probs)[index])
    for row, sample in enumerate(index):
        expected_qwk = cohen_kappa_score(
            y[sample], probs.argmax(axis=1)[sample], weights="quadratic"
        )
        assert qwk[row] == pytest.approx(expected_qwk)
        assert auc[row] == pytest.approx(roc_auc_score(y[sample] >= 2, p_koa(probs)[sample]))


def test_batched_auc_is_nan_without_both_classes() -> None:
    labels = np.array([[True, True, True], [False, True, False]])
    scores = np.array([[0.1, 0.2, 0.3], [0.1, 0.9, 0.2]])
    auc = batched_auc(labels, scores)
    assert np.isnan(auc[0]) and auc[1] == pytest.approx(1.0)


def test_bootstrap_interval_contains_estimate_and_narrows_with_more_samples() -> None:
    widths = []
    for n in (100, 2000):
        y, probs = _fake_predictions(n, seed=n)
        m = evaluate_predictions(y, probs, n_bootstrap=400, seed=3)
        assert m.qwk_ci is not None and m.auc_koa_ci is not None
        assert m.qwk_ci[0] <= m.qwk <= m.qwk_ci[1]
        assert m.auc_koa_ci[0] <= m.auc_koa <= m.auc_koa_ci[1]
        widths.append((m.qwk_ci[1] - m.qwk_ci[0], m.auc_koa_ci[1] - m.auc_koa_ci[0]))
    assert widths[1][0] < widths[0][0] and widths[1][1] < widths[0][1]


def test_bootstrap_is_reproducible_for_a_seed() -> None:
    y, probs = _fake_predictions(150, seed=4)
    first = evaluate_predictions(y, probs, n_bootstrap=200, seed=7)
    again = evaluate_predictions(y, probs, n_bootstrap=200, seed=7)
    other = evaluate_predictions(y, probs, n_bootstrap=200, seed=8)
    assert first.qwk_ci == again.qwk_ci
    assert first.qwk_ci != other.qwk_ci
