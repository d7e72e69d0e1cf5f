"""Tests for evaluation: temperature from probabilities, evaluate a registered version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from koa_core.data.datasets import KLDataset
from koa_core.errors import CorruptCheckpointError, DatasetError
from koa_core.evaluation.calibration import head_logits
from koa_core.evaluation.evaluate import (
    EvaluationOutcome,
    evaluate_probabilities,
    evaluate_version,
)
from koa_core.registry import ModelRegistry, ModelVersion
from tests.core.kl_fixtures import write_image_folder


@pytest.fixture
def champion(trained: Path) -> ModelVersion:
    registry = ModelRegistry()
    return registry.force_champion(registry.register(trained))


@pytest.mark.parametrize(
    "probs",
    [
        [[0.2, 0.2, 0.2, 0.2, 0.2]],
        [[0.9, 0.05, 0.03, 0.01, 0.01], [0.0, 0.0, 1.0, 0.0, 0.0]],
    ],
)
def test_log_probabilities_are_logits_of_the_same_softmax(probs: list[list[float]]) -> None:
    logits = torch.as_tensor(head_logits(probs))
    assert np.allclose(torch.softmax(logits, dim=1).numpy(), probs, atol=1e-9)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0, 4.0])
def test_temperature_undoes_known_miscalibration(true_temperature: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, size=(4000, 5))
    calibrated = torch.softmax(torch.as_tensor(logits), dim=1).numpy()
    labels = np.array([rng.choice(5, p=row) for row in calibrated])
    distorted = torch.softmax(torch.as_tensor(logits * true_temperature), dim=1).numpy()
    half = len(labels) // 2
    result = evaluate_probabilities(
        labels[half:],
        distorted[half:],
        val_labels=labels[:half],
        val_probs=distorted[:half],
        n_bootstrap=0,
    )
    assert result.temperature is not None
    assert result.temperature.value == pytest.approx(true_temperature, rel=0.15)
    assert result.temperature.reader_share == 0.0
    assert result.metrics.ece_calibrated is not None
    assert result.metrics.ece_calibrated < result.metrics.ece
    # Temperature scaling never changes which grade is predicted.
    assert result.calibrated_probs is not None
    assert (result.calibrated_probs.argmax(1) == distorted[half:].argmax(1)).all()


def test_without_validation_there_is_no_temperature() -> None:
    probs = np.full((10, 5), 0.2)
    result = evaluate_probabilities(np.arange(10) % 5, probs, n_bootstrap=0)
    assert result.temperature is None
    assert result.calibrated_probs is None
    assert result.metrics.ece_calibrated is None


def test_evaluate_version_writes_report_and_repeats_exactly(
    champion: ModelVersion, dataset: KLDataset, tmp_path: Path
) -> None:
    first = evaluate_version("champion", dataset.root, out_dir=tmp_path / "a", device="cpu")
    second = evaluate_version(champion.version, dataset, out_dir=tmp_path / "b", device="cpu")
    assert first.version == champion.version
    assert first.metrics == second.metrics
    for name in ("metrics.json", "report.md", "roc.png", "reliability.png"):
        assert (tmp_path / "a" / name).is_file()
    written = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert written["qwk"] == first.metrics.qwk
    recorded = ModelRegistry().get(champion.version).metrics["test"]
    assert recorded["report"] == str(tmp_path / "b" / "report.md")
    assert EvaluationOutcome.from_recorded(champion.version, "test", recorded) == second
    # Later metrics never touch the version's card.
    assert "test" not in json.loads(champion.card_path.read_text())["metrics"]


def test_missing_split_is_a_dataset_error(champion: ModelVersion, tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "no-test", {"train": 3, "val": 2})
    with pytest.raises(DatasetError, match="no 'test' split"):
        evaluate_version(champion, root)


def test_corrupt_weights_are_refused(champion: ModelVersion) -> None:
    data = champion.weights_path.read_bytes()
    champion.weights_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError):
        evaluate_version("champion", Path("unused"))
