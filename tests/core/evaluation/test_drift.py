"""PSI, KS and the drift verdicts, on hand-computed cases."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from koa_core.evaluation.drift import (
    DriftReport,
    DriftThresholds,
    compare_variable,
    drift_markdown,
    ks_test,
    population_stability_index,
    psi_bin_edges,
    read_scores_window,
    reference_table,
    window_reports,
)

HALF = [-np.inf, 0.5, np.inf]


def test_psi_of_two_bins_matches_the_formula() -> None:
    # Shares 1/2, 1/2 against 1/4, 3/4.
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert population_stability_index([0, 0, 1, 1], [0, 1, 1, 1], HALF) == pytest.approx(expected)


@pytest.mark.parametrize("values", [[0.1, 0.2, 0.9], [3.0] * 5, list(range(20))])
def test_psi_of_a_sample_against_itself_is_zero(values: list[float]) -> None:
    edges = psi_bin_edges(values)
    assert population_stability_index(values, values, edges) == pytest.approx(0.0)


def test_an_empty_bin_counts_as_epsilon() -> None:
    epsilon = 1e-4
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - epsilon) * math.log(0.5 / epsilon)
    psi = population_stability_index([0, 0], [0, 1], HALF, epsilon=epsilon)
    assert psi == pytest.approx(expected)


def test_psi_rejects_an_empty_sample() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        population_stability_index([], [1.0], HALF)


def test_ks_of_separated_samples_is_one_with_the_exact_p_value() -> None:
    statistic, pvalue = ks_test([1, 2, 3, 4], [5, 6, 7, 8])
    # Exact two-sided: 2 of the C(8, 4) = 70 orderings are as extreme.
    assert statistic == 1.0
    assert pvalue == pytest.approx(2 / 70)


def test_bins_come_from_the_reference() -> None:
    grades = psi_bin_edges([0, 0, 4], "kl_grade")
    np.testing.assert_array_equal(grades, [-np.inf, 0.5, 1.5, 2.5, 3.5, np.inf])
    quartiles = psi_bin_edges(np.arange(1, 10), bins=4)
    np.testing.assert_array_equal(quartiles, [-np.inf, 3, 5, 7, np.inf])
    np.testing.assert_array_equal(psi_bin_edges([2.0] * 9), [-np.inf, 2.0, np.inf])


def _normal(seed: int, n: int, loc: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, 1.0, n)


def test_a_shifted_sample_drifts_by_psi_and_ks() -> None:
    result = compare_variable("input_mean", _normal(0, 400), _normal(1, 300, loc=1.0))
    assert result.drifted and result.psi is not None and result.psi > 0.2
    assert "KS p=" in result.reason and "PSI" in result.reason


def test_the_same_distribution_does_not_drift() -> None:
    result = compare_variable("input_mean", _normal(0, 400), _normal(1, 300))
    assert not result.drifted and result.reason == ""
    assert result.ks_pvalue is not None and result.ks_pvalue > 0.01


def test_few_images_are_not_judged() -> None:
    result = compare_variable("p_koa", _normal(0, 400), _normal(1, 5, loc=5.0))
    assert not result.drifted and "too few" in result.reason
    assert result.ks_pvalue is None and result.psi is not None


def test_psi_alone_does_not_decide_on_small_samples() -> None:
    # 30 + 30 draws of one distribution: PSI over 10 bins is large by chance alone.
    reference, current = _normal(2, 30), _normal(3, 30)
    small = compare_variable("input_std", reference, current)
    assert small.psi is not None and small.psi > 0.2
    assert not small.drifted
    strict = DriftThresholds(min_samples_psi=30)
    assert compare_variable("input_std", reference, current, strict).drifted


def test_reference_rows_hold_predictions_and_input_statistics() -> None:
    probs = np.array([[0.7, 0.2, 0.1, 0.0, 0.0], [0.0, 0.1, 0.2, 0.3, 0.4]])
    images = np.stack([np.zeros((2, 2), np.uint8), np.array([[0, 255], [0, 255]], np.uint8)])
    table = reference_table(probs, images)
    assert table.column("kl_grade").to_pylist() == [0, 4]
    np.testing.assert_allclose(table.column("p_koa").to_numpy(), [0.1, 0.9], rtol=1e-6)
    np.testing.assert_allclose(table.column("input_mean").to_numpy(), [0.0, 0.5])
    np.testing.assert_allclose(table.column("input_std").to_numpy(), [0.0, 0.5])


def test_window_needs_a_day_and_an_empty_window_has_no_reports(tmp_path: Path) -> None:
    reference = pa.table({"p_koa": [0.5]})
    with pytest.raises(ValueError, match="window_days"):
        window_reports(reference, tmp_path, "v1", date(2026, 1, 1), 0)
    assert window_reports(reference, tmp_path, "v1", date(2026, 1, 1), 7) == []
    assert "nothing to compare" in drift_markdown([], DriftThresholds())


def test_markdown_flags_the_drifted_variable() -> None:
    drifted = compare_variable("input_mean", _normal(0, 400), _normal(1, 300, loc=1.0))
    report = DriftReport("v1", "2026-01-01", date(2026, 1, 1), date(2026, 1, 1), 300, (drifted,))
    text = drift_markdown([report], DriftThresholds())
    assert "**DRIFT**" in text and "| input_mean | 300 | 400 |" in text
    assert report.to_dict()["drifted"] is True


def test_the_window_reads_the_nights_in_it_from_either_folder_layout(tmp_path: Path) -> None:
    from tests.core.storage.test_results import write_scores

    nights = [date(2026, 1, day) for day in (1, 2, 3)]
    for night, n in zip(nights, (2, 3, 4), strict=True):
        write_scores(tmp_path, night, n, tag=str(night))
    # The first night in the folder older koa wrote, not yet renamed by a write.
    first = tmp_path / "scores" / "2026-01-01"
    first.rename(first.with_name("batch_date=2026-01-01"))

    window = read_scores_window(tmp_path, nights[0], nights[1])
    assert window["batch_date"].to_pylist() == [nights[0]] * 2 + [nights[1]] * 3
