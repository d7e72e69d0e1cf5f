"""Tests for koa_core.registry.store: versions, champion pointer, integrity, the promotion rule."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from koa_core.errors import CorruptCheckpointError, ModelNotFoundError
from koa_core.model.card import ModelCard
from koa_core.model.checkpoint import save_torch
from koa_core.registry.store import (
    CHAMPION_POINTER,
    ModelRegistry,
    code_revision,
    should_promote,
)

T0 = datetime(2026, 11, 28, 2, 15, tzinfo=UTC)


def _model_dir(path: Path, seed: int, *, sidecar: bool = False) -> Path:
    """A training-output directory with a tiny state_dict and a train-style card.json."""
    path.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    state = {"conv.weight": torch.randn(4, 1, 3, 3, generator=generator), "fc.bias": torch.zeros(5)}
    if sidecar:
        save_torch(state, path / "weights.pt")
    else:
        torch.save(state, path / "weights.pt")
    card = {"card": ModelCard().to_dict(), "hyperparameters": {"lr": 0.001, "epochs": 3}}
    card["data"] = {"fingerprint": f"data-{seed}"}
    (path / "card.json").write_text(json.dumps(card))
    return path


def _metrics(
    qwk: float | None, auc: float | None, supports: tuple[int, ...] = (10, 10, 10, 10, 10)
) -> dict[str, Any]:
    per_class = [{"grade": g, "support": s} for g, s in enumerate(supports)]
    return {"qwk": qwk, "auc_koa": auc, "n_samples": sum(supports), "per_class": per_class}


@pytest.fixture
def registry(koa_home: Path) -> ModelRegistry:
    return ModelRegistry()


def test_register_list_get(registry: ModelRegistry, koa_home: Path, tmp_path: Path) -> None:
    first = registry.register(
        _model_dir(tmp_path / "a", 1), created_at=T0, metrics={"validation": {"qwk": 0.7}}
    )
    second = registry.register(_model_dir(tmp_path / "b", 2), hyperparameters={"lr": 0.01})
    assert registry.root == koa_home / "models"
    assert first.path == koa_home / "models" / "versions" / first.version
    assert re.fullmatch(r"20261128T021500Z-[0-9a-f]{6}", first.version)
    assert first.weights_sha256.startswith(first.version[-6:])
    assert [v.version for v in registry.list_versions()] == [first.version, second.version]
    assert registry.get(first.version) == first
    assert registry.get("latest") == second
    assert registry.get(second.path) == second
    doc = json.loads(first.card_path.read_text())
    assert doc["version"] == first.version
    assert doc["created_at"] == T0.isoformat()
    assert doc["code_revision"] == code_revision()
    assert doc["hyperparameters"] == {"lr": 0.001, "epochs": 3}
    assert doc["data"] == {"fingerprint": "data-1"}
    assert doc["metrics"] == {"validation": {"qwk": 0.7}}
    assert second.document["hyperparameters"] == {"lr": 0.01}
    assert first.model_card() == ModelCard()
    assert torch.load(first.weights_path, weights_only=True)["fc.bias"].shape == (5,)


def test_same_weights_registered_twice_get_distinct_versions(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    source = _model_dir(tmp_path / "a", 1)
    one = registry.register(source, created_at=T0)
    two = registry.register(source, created_at=T0)
    assert one.version != two.version
    assert two.version.startswith(one.version)
    assert len(registry.list_versions()) == 2


def test_register_accepts_files_and_keeps_the_sidecar(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    source = _model_dir(tmp_path / "a", 1, sidecar=True)
    version = registry.register((source / "weights.pt", source / "card.json"))
    assert (version.path / "weights.pt.sha256").is_file()
    registry.verify(version)


def test_register_refuses_weights_that_fail_their_sidecar(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    source = _model_dir(tmp_path / "a", 1, sidecar=True)
    (source / "weights.pt").write_bytes((source / "weights.pt").read_bytes()[:-10])
    with pytest.raises(CorruptCheckpointError):
        registry.register(source)
    assert registry.list_versions() == []


def test_register_missing_files_raise(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"weights\.pt"):
        registry.register(tmp_path / "nothing")


def test_crash_during_register_leaves_no_version(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _model_dir(tmp_path / "a", 1)

    def crash(self: Path, target: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.register(source)
    monkeypatch.undo()
    assert registry.list_versions() == []
    assert list(registry.versions_dir.iterdir()) == []


def test_champion_pointer(registry: ModelRegistry, tmp_path: Path) -> None:
    assert registry.champion() is None
    with pytest.raises(ModelNotFoundError, match="champion"):
        registry.get("champion")
    first = registry.register(_model_dir(tmp_path / "a", 1))
    registry.register(_model_dir(tmp_path / "b", 2))
    registry.set_champion(first.version)
    assert registry.champion() == first
    assert registry.get("champion") == first
    assert json.loads((registry.root / CHAMPION_POINTER).read_text())["version"] == first.version


def test_flipped_bytes_are_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    version = registry.register(_model_dir(tmp_path / "a", 1))
    registry.verify(version.version)
    data = bytearray(version.weights_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    version.weights_path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=rf"{version.version}.*does not match"):
        registry.verify(version.version)
    with pytest.raises(CorruptCheckpointError):
        registry.set_champion(version)
    assert registry.champion() is None


def test_missing_weights_are_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    version = registry.register(_model_dir(tmp_path / "a", 1))
    version.weights_path.unlink()
    with pytest.raises(CorruptCheckpointError, match="missing"):
        registry.verify(version)


@pytest.mark.parametrize("ref", ["20990101T000000Z-abcdef", "nope", "../versions", "latest"])
def test_unknown_ref_lists_what_exists(registry: ModelRegistry, tmp_path: Path, ref: str) -> None:
    if ref != "latest":
        existing = registry.register(_model_dir(tmp_path / "a", 1))
    with pytest.raises(ModelNotFoundError) as raised:
        registry.get(ref)
    assert (existing.version if ref != "latest" else "registered: none") in str(raised.value)


@pytest.mark.parametrize(
    ("champion", "challenger", "promote"),
    [
        (None, _metrics(0.10, 0.50), True),  # first model
        (_metrics(0.80, 0.90), _metrics(0.81, 0.90), True),  # clear QWK gain
        (_metrics(0.80, 0.90), _metrics(0.805, 0.895), True),  # both exactly on the limits
        (_metrics(0.80, 0.90), _metrics(0.804, 0.95), False),  # QWK gain too small
        (_metrics(0.80, 0.90), _metrics(0.75, 0.95), False),  # worse QWK
        (_metrics(0.80, 0.90), _metrics(0.90, 0.89), False),  # gains QWK, loses too much AUC
        (_metrics(0.80, 0.90), _metrics(None, 0.95), False),  # QWK undefined
        (_metrics(0.80, 0.90), _metrics(0.90, 0.95, (9, 10, 10, 10, 11)), False),  # other test set
    ],
)
def test_promotion_rule(
    champion: dict[str, Any] | None, challenger: dict[str, Any], promote: bool
) -> None:
    decision = should_promote(champion, challenger, min_qwk_gain=0.005, max_auc_loss=0.005)
    assert decision.promote is promote
    assert decision.reason


def test_promote_applies_the_rule_and_logs(registry: ModelRegistry, tmp_path: Path) -> None:
    first = registry.register(_model_dir(tmp_path / "a", 1))
    worse = registry.register(_model_dir(tmp_path / "b", 2))
    better = registry.register(_model_dir(tmp_path / "c", 3))
    assert registry.promote(first.version, None, _metrics(0.80, 0.90)).promote
    with pytest.raises(ValueError, match="champion"):
        registry.promote(worse.version, None, _metrics(0.90, 0.95))
    refused = registry.promote(worse.version, _metrics(0.80, 0.90), _metrics(0.70, 0.95))
    assert not refused.promote and registry.champion() == first
    again = registry.promote(first.version, _metrics(0.80, 0.90), _metrics(0.80, 0.90))
    assert not again.promote and "already" in again.reason
    assert registry.promote(better.version, _metrics(0.80, 0.90), _metrics(0.85, 0.90)).promote
    assert registry.champion() == better
    log = registry.promotions()
    assert [(r["challenger"], r["promoted"]) for r in log] == [
        (first.version, True),
        (worse.version, False),
        (first.version, False),
        (better.version, True),
    ]
    assert log[-1]["champion"] == first.version
    assert log[0]["min_qwk_gain"] == pytest.approx(0.005)


def test_leftover_temp_file_from_a_crashed_write_keeps_the_old_champion(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    old = registry.register(_model_dir(tmp_path / "a", 1))
    registry.set_champion(old)
    (registry.root / ".champion.x1y2z3").write_text('{"version": "half-writ')
    assert registry.champion() == old


def test_interrupted_promotion_keeps_the_old_champion(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = registry.register(_model_dir(tmp_path / "a", 1))
    new = registry.register(_model_dir(tmp_path / "b", 2))
    registry.set_champion(old)

    def killed(self: Path, target: Path) -> None:
        raise KeyboardInterrupt  # the process dies between writing the temp file and the rename

    monkeypatch.setattr(Path, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        registry.promote(new.version, _metrics(0.5, 0.8), _metrics(0.9, 0.9))
    monkeypatch.undo()
    assert registry.champion() == old
    assert registry.promotions() == []


def test_record_metrics_rewrites_the_card(registry: ModelRegistry, tmp_path: Path) -> None:
    version = registry.register(_model_dir(tmp_path / "a", 1), metrics={"validation": {"qwk": 0.7}})
    updated = registry.record_metrics(version.version, "test", {"qwk": 0.65, "auc_koa": 0.9})
    assert updated.metrics == {"validation": {"qwk": 0.7}, "test": {"qwk": 0.65, "auc_koa": 0.9}}
    assert registry.get(version.version).metrics["test"]["qwk"] == 0.65
    assert updated.weights_sha256 == version.weights_sha256
    assert [p.name for p in version.path.iterdir() if p.name.startswith(".")] == []


def test_code_revision_outside_git_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    assert code_revision() == "unknown"
