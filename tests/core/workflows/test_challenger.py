"""Tests for the promotion workflow: train a challenger, test it once, compare, rule, audit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from koa_core.data.datasets import KLDataset
from koa_core.errors import DatasetError
from koa_core.evaluation.evaluate import evaluate_version
from koa_core.registry import ModelRegistry, ModelVersion
from koa_core.registry.annotations import METRICS_LOG
from koa_core.workflows.challenger import (
    DRY_RUN_PREFIX,
    promote_challenger,
    promote_if_better,
    train_challenger,
)
from tests.core.kl_fixtures import TINY_CONFIG as CONFIG
from tests.core.kl_fixtures import constant_model, write_image_folder


@pytest.fixture
def champion(trained: Path, dataset: KLDataset) -> ModelVersion:
    """The trained model as champion, with test metrics recorded on ``dataset``."""
    registry = ModelRegistry()
    version = registry.force_champion(registry.register(trained))
    evaluate_version(version, dataset, device="cpu")
    return version


def _reports(koa_home: Path, version: str, split: str) -> list[Path]:
    """The evaluation report folders written for ``version`` on ``split``."""
    return sorted((koa_home / "evaluations" / version).glob(f"{split}-*"))


def test_train_challenger_tests_once_records_beside_the_card_and_never_promotes(
    dataset: KLDataset, tmp_path: Path, koa_home: Path
) -> None:
    seen: list[int] = []
    challenger = train_challenger(
        CONFIG, dataset.root, out_dir=tmp_path / "run", progress=lambda s: seen.append(s.epoch)
    )
    registry = ModelRegistry()
    version = challenger.version
    assert seen == [1, 2, 3, 4]
    assert registry.champion() is None and registry.promotions() == []
    assert [len(_reports(koa_home, version.version, s)) for s in ("val", "test")] == [1, 1]
    lines = (version.path / METRICS_LOG).read_text().splitlines()
    assert [json.loads(line)["split"] for line in lines] == ["validation", "test"]
    assert json.loads(version.card_path.read_text())["metrics"] == {}
    test = version.metrics["test"]
    assert challenger.tested().recorded_metrics() == test
    assert test["n_samples"] == len(dataset.splits["test"].labels)
    assert test["dataset_fingerprint"] == dataset.fingerprint
    assert test["temperature"] > 0
    # The sets were calibrated on val before registering: the card carries them, and the
    # test evaluation measured them.
    card = version.model_card()
    assert card.conformal_threshold is not None
    assert card.conformal_calibration_size == len(dataset.splits["val"].labels)
    assert test["conformal_level"] == card.conformal_level
    assert 0.0 <= test["conformal_coverage"] <= 1.0
    assert Path(test["report"]).is_relative_to(koa_home / "evaluations" / version.version)
    assert version.document["hyperparameters"]["epochs"] == CONFIG.epochs
    assert version.document["data"]["fingerprint"] == dataset.fingerprint
    # The validation split calibrates, so it is scored without a temperature of its own.
    assert version.metrics["validation"]["temperature"] is None


def test_a_dataset_without_a_test_split_cannot_be_compared(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "no-test", {"train": 3, "val": 2})
    challenger = train_challenger(CONFIG, root, out_dir=tmp_path / "run")
    assert challenger.test is None and "test" not in challenger.version.metrics
    with pytest.raises(DatasetError, match="no 'test' split"):
        challenger.tested()


@pytest.mark.usefixtures("no_quality_floor")
def test_the_champion_is_re_evaluated_only_on_another_dataset(
    champion: ModelVersion, dataset: KLDataset, tmp_path: Path, koa_home: Path
) -> None:
    registry = ModelRegistry()
    useless = registry.register(constant_model(tmp_path / "useless"))
    same = promote_if_better(useless, dataset.root, device="cpu")
    assert not same.promoted and same.record.champion == champion.version
    assert "QWK gain below" in same.record.reason
    assert same.challenger.metrics.auc_koa == pytest.approx(0.5)
    assert registry.champion() == champion
    assert registry.promotions()[-1] == same.record.to_dict()
    assert len(_reports(koa_home, champion.version, "test")) == 1  # its recorded metrics served

    other = tmp_path / "kl-other"
    shutil.copytree(dataset.root, other)
    next((other / "train" / "0").iterdir()).unlink()
    again = promote_if_better(useless, other, device="cpu")
    assert not again.promoted
    assert again.champion is not None and again.champion.dataset_fingerprint != dataset.fingerprint
    assert len(_reports(koa_home, champion.version, "test")) == 2


def test_a_first_model_under_the_floor_is_refused_and_logged(
    dataset: KLDataset, tmp_path: Path
) -> None:
    registry = ModelRegistry()
    useless = registry.register(constant_model(tmp_path / "useless"))
    outcome = promote_if_better(useless, dataset.root, device="cpu")
    assert not outcome.promoted and outcome.record.below_floor
    assert "below the quality floor 0.6" in outcome.record.reason
    assert registry.champion() is None
    assert registry.promotions() == [outcome.record.to_dict()]


def test_promote_false_reports_the_rule_and_changes_nothing(
    trained: Path, dataset: KLDataset, tmp_path: Path
) -> None:
    registry = ModelRegistry()
    version = registry.register(trained)
    tested = evaluate_version(version, dataset, out_dir=tmp_path / "report")
    outcome = promote_challenger(tested, dataset, apply=False)
    assert not outcome.applied and not outcome.promoted
    assert outcome.record.reason.startswith(DRY_RUN_PREFIX)
    assert registry.champion() is None and registry.promotions() == []


def test_promotion_without_data_needs_metrics_on_the_same_test_set(
    trained: Path, tmp_path: Path
) -> None:
    registry = ModelRegistry()
    registry.force_champion(registry.register(trained))
    useless = registry.register(constant_model(tmp_path / "useless"))
    with pytest.raises(DatasetError, match="same test set"):
        promote_if_better(useless)


@pytest.mark.usefixtures("no_quality_floor")
def test_first_model_is_promoted_on_recorded_metrics(
    trained: Path, dataset: KLDataset, tmp_path: Path
) -> None:
    version = ModelRegistry().register(trained)
    evaluate_version(version, dataset, out_dir=tmp_path / "report")
    outcome = promote_if_better(version.version)
    assert outcome.promoted and outcome.record.champion is None
    assert "no champion yet" in outcome.record.reason
    assert ModelRegistry().champion() == version
    (line,) = ModelRegistry().promotions()
    assert line == outcome.record.to_dict() and line["forced"] is False
