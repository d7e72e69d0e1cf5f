"""Tests for the prediction sets fitted after training: into the card, out in the evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from koa_core.data.datasets import KLDataset
from koa_core.evaluation.conformal import ConformalCalibration, set_quality
from koa_core.evaluation.evaluate import evaluate_version
from koa_core.evaluation.set_calibration import (
    calibrate_run,
    card_calibration,
    fit_sets,
    with_calibration,
)
from koa_core.model.card import ModelCard, read_card
from koa_core.model.checkpoint import load_model
from koa_core.model.inference import predict_dataset
from koa_core.registry import ModelRegistry
from koa_core.schema import CARD_NAME, WEIGHTS_NAME


def test_a_card_written_before_sets_loads_uncalibrated_at_the_default_level() -> None:
    old = ModelCard().to_dict()
    for key in [key for key in old if key.startswith("conformal_")]:
        del old[key]
    card = ModelCard.from_dict(old)
    assert card.conformal_level == 0.90 and card_calibration(card) is None


@pytest.mark.parametrize("reader_share", [0.0, 0.1])
def test_the_calibration_round_trips_through_the_card(reader_share: float) -> None:
    calibration = ConformalCalibration(0.8, 0.625, 1.7, 412, reader_share)
    card = ModelCard.from_dict(
        json.loads(json.dumps(with_calibration(ModelCard(), calibration).to_dict()))
    )
    assert card_calibration(card) == calibration


@pytest.fixture
def calibrated_run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the shared training run (calibration rewrites its card)."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_calibrate_run_fits_on_validation_and_keeps_the_rest_of_the_card(
    calibrated_run: Path, dataset: KLDataset
) -> None:
    before = json.loads((calibrated_run / CARD_NAME).read_text())
    calibration = calibrate_run(calibrated_run, dataset, device="cpu")
    after = json.loads((calibrated_run / CARD_NAME).read_text())
    assert calibration is not None
    assert card_calibration(read_card(calibrated_run / CARD_NAME)) == calibration
    assert {k: v for k, v in after.items() if k != "card"} == {
        k: v for k, v in before.items() if k != "card"
    }
    card = ModelCard.from_dict(before["card"])
    val = dataset.splits["val"]
    model = load_model(calibrated_run / WEIGHTS_NAME, card)
    probs = predict_dataset(model, card, val.images, device="cpu")
    reader_share = card.architecture.reader_noise
    assert calibration == fit_sets(probs, val.labels.numpy(), card.conformal_level, reader_share)
    assert calibration.n_calibration == len(val.labels) and calibration.temperature


def test_evaluate_reports_coverage_and_set_size_of_the_cards_sets(
    calibrated_run: Path, dataset: KLDataset
) -> None:
    calibration = calibrate_run(calibrated_run, dataset, device="cpu")
    assert calibration is not None
    registry = ModelRegistry()
    version = registry.register(calibrated_run)
    outcome = evaluate_version(version, dataset, "test", device="cpu")
    card = version.model_card()
    test = dataset.splits["test"]
    probs = predict_dataset(load_model(version.weights_path, card), card, test.images, device="cpu")
    expected = set_quality(probs, test.labels.numpy(), calibration)
    metrics = outcome.metrics
    assert metrics.conformal_level == card.conformal_level == 0.90
    assert metrics.conformal_coverage == pytest.approx(expected.coverage)
    assert metrics.conformal_mean_set_size == pytest.approx(expected.mean_set_size)
    report = outcome.report.report_md.read_text()
    assert "## Prediction sets" in report and f"{expected.coverage:.1%}" in report
    assert registry.get(version.version).metrics["test"]["conformal_coverage"] == pytest.approx(
        expected.coverage
    )
    # On the calibration split itself coverage would be in-sample: not reported.
    assert (
        evaluate_version(version, dataset, "val", device="cpu").metrics.conformal_coverage is None
    )


def test_an_uncalibrated_card_is_calibrated_on_validation_at_evaluation(
    trained: Path, dataset: KLDataset
) -> None:
    version = ModelRegistry().register(trained)
    assert card_calibration(version.model_card()) is None
    metrics = evaluate_version(version, dataset, "test", device="cpu").metrics
    assert metrics.conformal_level == 0.90
    assert metrics.conformal_coverage is not None and 0.0 <= metrics.conformal_coverage <= 1.0
    assert metrics.conformal_mean_set_size is not None
    assert 1.0 <= metrics.conformal_mean_set_size <= 5.0
    assert np.isfinite(metrics.conformal_mean_set_size)
