"""Tests for koa_core.evaluation.report: files written, PNGs decode, metrics.json round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from koa_core.evaluation.calibration import apply_temperature
from koa_core.evaluation.metrics import EvaluationMetrics, evaluate_predictions
from koa_core.evaluation.report import comparison_table, plot_reliability, write_evaluation_report


def _split(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), y] += 1.5
    return y, logits * 3.0


@pytest.mark.parametrize("calibrated", [True, False])
def test_report_files_exist_decode_and_round_trip(tmp_path: Path, calibrated: bool) -> None:
    y, logits = _split()
    probs = apply_temperature(logits, 1.0)
    calibrated_probs = apply_temperature(logits, 3.0) if calibrated else None
    metrics = evaluate_predictions(y, probs, n_bootstrap=100, calibrated_probs=calibrated_probs)
    paths = write_evaluation_report(
        metrics,
        tmp_path / "report",
        title="v1 on test",
        y_true=y,
        probs=probs,
        calibrated_probs=calibrated_probs,
    )
    for png in (paths.confusion_png, paths.roc_png, paths.reliability_png):
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 200
    data = json.loads(paths.metrics_json.read_text())
    assert EvaluationMetrics.from_dict(data) == metrics
    markdown = paths.report_md.read_text()
    assert markdown.startswith("# v1 on test")
    for png in (paths.confusion_png, paths.roc_png, paths.reliability_png):
        assert f"]({png.name})" in markdown
    assert metrics.qwk_ci is not None
    assert f"[{metrics.qwk_ci[0]:.3f}, {metrics.qwk_ci[1]:.3f}]" in markdown
    assert ("after temperature scaling" in markdown) == calibrated


def test_reliability_panel_count_follows_calibration(tmp_path: Path) -> None:
    y, logits = _split(seed=1)
    probs = apply_temperature(logits, 1.0)
    plot_reliability(y, probs, None, tmp_path / "one.png")
    plot_reliability(y, probs, apply_temperature(logits, 3.0), tmp_path / "two.png")
    with Image.open(tmp_path / "one.png") as one, Image.open(tmp_path / "two.png") as two:
        assert two.size[0] > 1.5 * one.size[0]


def test_report_survives_a_split_missing_grades(tmp_path: Path) -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    probs = np.tile([0.6, 0.3, 0.05, 0.03, 0.02], (6, 1))
    metrics = evaluate_predictions(y, probs, n_bootstrap=20)
    paths = write_evaluation_report(metrics, tmp_path, title="tiny", y_true=y, probs=probs)
    markdown = paths.report_md.read_text()
    assert "n/a" in markdown and "Note:" in markdown


def test_comparison_table_marks_the_better_model() -> None:
    y, logits = _split(n=300, seed=2)
    champion = evaluate_predictions(y, apply_temperature(logits, 1.0), n_bootstrap=50).to_dict()
    challenger = dict(champion, qwk=champion["qwk"] + 0.05, mae=champion["mae"] + 0.1)
    table = comparison_table(champion, challenger).splitlines()
    assert table[0].startswith("| Metric | Champion | Challenger")
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert rows["Quadratic weighted kappa"].rstrip(" |").endswith("challenger")
    assert "+0.050" in rows["Quadratic weighted kappa"]
    assert rows["MAE (grades)"].rstrip(" |").endswith("champion")
    assert rows["Accuracy"].rstrip().endswith("|  |")
    assert "ECE after temperature scaling" not in "\n".join(table)
