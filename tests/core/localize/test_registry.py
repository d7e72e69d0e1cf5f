"""Localizer versions: register, the rule, the champion pointer apart from the grader's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from koa_core.config import get_settings
from koa_core.errors import CorruptCheckpointError, ModelNotFoundError
from koa_core.localize.card import LocalizerCard
from koa_core.localize.find import Localizer
from koa_core.localize.network import build_localizer
from koa_core.localize.train import TrainedLocalizer
from koa_core.registry import ModelRegistry
from koa_core.registry.localizers import (
    LocalizerPolicy,
    LocalizerRegistry,
    should_promote_localizer,
)

GOOD = {
    "n_films": 30,
    "n_knees": 48,
    "n_matched": 48,
    "missed": 0,
    "invented": 0,
    "median_error_mm": 1.5,
    "p99_error_mm": 6.0,
    "max_error_mm": 7.0,
    "handedness_accuracy": 1.0,
    "accept_score": 0.5,
}


def _saved(tmp_path: Path, name: str, **changes: Any) -> Path:
    """An (untrained) localizer saved as training saves one, with these validation figures."""
    card = LocalizerCard(metrics={"validation": {**GOOD, **changes}}, data_fingerprint="abc")
    localizer = Localizer(build_localizer(card.architecture).eval(), card)
    return TrainedLocalizer(localizer, ()).save(tmp_path / name)


def test_the_registry_lives_under_models_localizers(koa_home: Path) -> None:
    assert LocalizerRegistry().root == koa_home / "models" / "localizers"
    assert get_settings().localizers_dir == koa_home / "models" / "localizers"


def test_register_keeps_the_card_metrics_and_fingerprint(tmp_path: Path) -> None:
    registry = LocalizerRegistry()
    version = registry.register(_saved(tmp_path, "run"))
    card = registry.card(version.version)
    assert card.version == version.version
    assert card.weights_sha256 == version.weights_sha256 != ""
    assert card.metrics["validation"]["median_error_mm"] == 1.5
    assert card.data_fingerprint == "abc"
    assert card.created_at == version.created_at
    assert registry.load(version.version).card == card


def test_a_localizer_that_meets_the_rule_becomes_champion_apart_from_the_grader(
    tmp_path: Path,
) -> None:
    registry = LocalizerRegistry()
    version = registry.register(_saved(tmp_path, "run"))
    record = registry.promote(version.version)
    assert record.promoted and not record.forced
    assert registry.champion() == version
    assert ModelRegistry().champion() is None
    assert ModelRegistry().promotions() == []
    assert [line["challenger"] for line in registry.promotions()] == [version.version]
    assert registry.load().card.version == version.version
    again = registry.promote(version.version)
    assert not again.promoted and "already the champion" in again.reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"median_error_mm": 3.5}, "median above 3 mm"),
        ({"p99_error_mm": 10.5}, "p99 above 10 mm"),
        ({"missed": 1}, "missed or invented knees"),
        ({"invented": 2}, "missed or invented knees"),
        ({"handedness_accuracy": 0.98}, "handedness below 1"),
        ({"median_error_mm": None, "p99_error_mm": None}, "median above 3 mm"),
    ],
)
def test_the_rule_refuses_each_failure_and_logs_it(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    registry = LocalizerRegistry()
    version = registry.register(_saved(tmp_path, "run", **changes))
    record = registry.promote(version.version)
    assert not record.promoted and record.below_floor
    assert reason in record.reason
    assert registry.champion() is None
    (line,) = registry.promotions()
    assert line["promoted"] is False and line["policy"]["max_p99_error_mm"] == 10.0


def test_the_thresholds_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOA_LOCALIZER_MAX_MEDIAN_ERROR_MM", "1.0")
    get_settings.cache_clear()
    assert LocalizerPolicy.from_settings().max_median_error_mm == 1.0
    assert not should_promote_localizer(GOOD).promote
    assert should_promote_localizer(GOOD, LocalizerPolicy(3.0, 10.0, 1.0)).promote


def test_force_makes_a_failing_localizer_champion_with_an_audit_line(tmp_path: Path) -> None:
    registry = LocalizerRegistry()
    version = registry.register(_saved(tmp_path, "run", missed=3))
    registry.force_champion(version.version)
    assert registry.champion() == version
    (line,) = registry.promotions()
    assert line["forced"] is True and line["policy"] is None


def test_altered_weights_are_refused(tmp_path: Path) -> None:
    registry = LocalizerRegistry()
    version = registry.register(_saved(tmp_path, "run"))
    with version.weights_path.open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(CorruptCheckpointError):
        registry.load(version.version)
    with pytest.raises(CorruptCheckpointError):
        registry.promote(version.version)


def test_a_grader_card_is_not_a_localizer(tmp_path: Path) -> None:
    saved = _saved(tmp_path, "run")
    (saved / "card.json").write_text(json.dumps({"card": {"input_size": 224}}))
    with pytest.raises(CorruptCheckpointError, match="not a readable localizer card"):
        LocalizerRegistry().register(saved)


def test_no_champion_yet_is_a_clear_error() -> None:
    with pytest.raises(ModelNotFoundError, match="champion"):
        LocalizerRegistry().load()
