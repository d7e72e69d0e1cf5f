"""Tests for koa_core.registry: versions, integrity, champion pointer + audit log, rule, metrics."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from koa_core.config import get_settings
from koa_core.errors import CorruptCheckpointError, ModelNotFoundError
from koa_core.model.card import ModelCard
from koa_core.model.checkpoint import save_torch
from koa_core.registry import ModelRegistry, PromotionPolicy, should_promote
from koa_core.registry.annotations import METRICS_LOG
from koa_core.registry.champion import CHAMPION_POINTER, PromotionRecord
from koa_core.registry.provenance import code_revision

T0 = datetime(2026, 11, 28, 2, 15, tzinfo=UTC)
POLICY = PromotionPolicy(min_qwk_gain=0.005, max_auc_loss=0.005, min_qwk=0.6)
AUDIT_KEYS = set(PromotionRecord.__dataclass_fields__)


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


def test_forcing_the_champion_moves_the_pointer_and_logs_it(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    assert registry.champion() is None
    with pytest.raises(ModelNotFoundError, match="champion"):
        registry.get("champion")
    first = registry.register(_model_dir(tmp_path / "a", 1))
    second = registry.register(_model_dir(tmp_path / "b", 2))
    registry.force_champion(first.version)
    registry.force_champion(second, reason="rollback drill")
    assert registry.champion() == second
    assert registry.get("champion") == second
    assert json.loads((registry.root / CHAMPION_POINTER).read_text())["version"] == second.version
    log = registry.promotions()
    assert [(r["challenger"], r["champion"], r["forced"]) for r in log] == [
        (first.version, None, True),
        (second.version, first.version, True),
    ]
    assert log[1]["reason"] == "rollback drill" and log[1]["policy"] is None
    assert all(set(r) == AUDIT_KEYS and r["promoted"] for r in log)


def test_flipped_bytes_are_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    version = registry.register(_model_dir(tmp_path / "a", 1))
    registry.verify(version.version)
    data = bytearray(version.weights_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    version.weights_path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=rf"{version.version}.*does not match"):
        registry.verify(version.version)
    with pytest.raises(CorruptCheckpointError):
        registry.force_champion(version)
    with pytest.raises(CorruptCheckpointError):
        registry.promote(version, None, _metrics(0.9, 0.9), policy=POLICY)
    assert registry.champion() is None
    assert registry.promotions() == []


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
        (None, _metrics(0.70, 0.50), True),  # first model, above the floor
        (None, _metrics(0.59, 0.99), False),  # first model, under the floor
        (None, _metrics(0.60, 0.90), True),  # first model exactly on the floor
        (None, _metrics(None, 0.90), False),  # QWK undefined: cannot clear the floor
        (_metrics(0.80, 0.90), _metrics(0.81, 0.90), True),  # clear QWK gain
        (_metrics(0.80, 0.90), _metrics(0.805, 0.895), True),  # both exactly on the limits
        (_metrics(0.80, 0.90), _metrics(0.804, 0.95), False),  # QWK gain too small
        (_metrics(0.80, 0.90), _metrics(0.75, 0.95), False),  # worse QWK
        (_metrics(0.80, 0.90), _metrics(0.90, 0.89), False),  # gains QWK, loses too much AUC
        (_metrics(0.80, 0.90), _metrics(None, 0.95), False),  # QWK undefined
        (_metrics(0.80, 0.90), _metrics(0.90, 0.95, (9, 10, 10, 10, 11)), False),  # other test set
        (_metrics(0.40, 0.90), _metrics(0.55, 0.95), False),  # beats a weak champion, still under
    ],
)
def test_promotion_rule(
    champion: dict[str, Any] | None, challenger: dict[str, Any], promote: bool
) -> None:
    decision = should_promote(champion, challenger, POLICY)
    assert decision.promote is promote
    assert decision.reason
    qwk = challenger["qwk"]
    assert decision.below_floor is (qwk is None or qwk < POLICY.min_qwk)


def test_another_dataset_is_another_test_set() -> None:
    champion = {**_metrics(0.80, 0.90), "dataset_fingerprint": "a" * 64}
    challenger = {**_metrics(0.90, 0.95), "dataset_fingerprint": "b" * 64}
    decision = should_promote(champion, challenger, POLICY)
    assert not decision.promote and "not the same test set" in decision.reason


def test_the_policy_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PromotionPolicy.from_settings().min_qwk == pytest.approx(0.6)
    monkeypatch.setenv("KOA_PROMOTION_MIN_QWK", "0.75")
    get_settings.cache_clear()
    assert PromotionPolicy.from_settings().min_qwk == pytest.approx(0.75)
    assert not should_promote(None, _metrics(0.70, 0.90)).promote


def test_promote_applies_the_rule_and_logs(registry: ModelRegistry, tmp_path: Path) -> None:
    first = registry.register(_model_dir(tmp_path / "a", 1))
    worse = registry.register(_model_dir(tmp_path / "b", 2))
    better = registry.register(_model_dir(tmp_path / "c", 3))
    founded = registry.promote(first.version, None, _metrics(0.80, 0.90), policy=POLICY)
    assert founded.promoted and founded.champion is None
    with pytest.raises(ValueError, match="champion"):
        registry.promote(worse.version, None, _metrics(0.90, 0.95), policy=POLICY)
    refused = registry.promote(worse, _metrics(0.80, 0.90), _metrics(0.70, 0.95), policy=POLICY)
    assert not refused.promoted and registry.champion() == first
    again = registry.promote(first, _metrics(0.80, 0.90), _metrics(0.80, 0.90), policy=POLICY)
    assert not again.promoted and "already" in again.reason
    best = registry.promote(better, _metrics(0.80, 0.90), _metrics(0.85, 0.90), policy=POLICY)
    assert best.promoted and registry.champion() == better
    log = registry.promotions()
    assert log == [r.to_dict() for r in (founded, refused, again, best)]
    assert [(r["challenger"], r["promoted"], r["forced"]) for r in log] == [
        (first.version, True, False),
        (worse.version, False, False),
        (first.version, False, False),
        (better.version, True, False),
    ]
    assert log[-1]["champion"] == first.version
    assert log[0]["policy"] == POLICY.to_dict()
    assert all(set(r) == AUDIT_KEYS for r in log)


def test_a_model_under_the_floor_is_refused_by_the_rule_and_taken_only_by_force(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    weak = registry.register(_model_dir(tmp_path / "a", 1))
    refused = registry.promote(weak, None, _metrics(0.45, 0.80), policy=POLICY)
    assert not refused.promoted and refused.below_floor
    assert "quality floor 0.6" in refused.reason
    assert registry.champion() is None
    registry.force_champion(weak)
    assert registry.champion() == weak
    rule, forced = registry.promotions()
    assert (rule["promoted"], rule["forced"], rule["below_floor"]) == (False, False, True)
    assert (forced["promoted"], forced["forced"], forced["challenger"]) == (
        True,
        True,
        weak.version,
    )


def test_a_champion_that_changed_since_the_comparison_refuses_the_challenger(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    old, other, new = (registry.register(_model_dir(tmp_path / n, i)) for i, n in enumerate("abc"))
    registry.force_champion(old)
    registry.force_champion(other)
    stale = registry.promote(
        new, _metrics(0.70, 0.90), _metrics(0.90, 0.95), compared_with=old.version, policy=POLICY
    )
    assert not stale.promoted and "changed" in stale.reason
    assert registry.champion() == other
    assert registry.promotions()[-1] == stale.to_dict()


def test_every_move_of_the_pointer_has_its_audit_line(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    a, b, c = (registry.register(_model_dir(tmp_path / n, i)) for i, n in enumerate("abc"))
    registry.promote(a, None, _metrics(0.70, 0.90), policy=POLICY)
    registry.promote(b, _metrics(0.70, 0.90), _metrics(0.80, 0.90), policy=POLICY)
    registry.force_champion(c)
    promoted = [r["challenger"] for r in registry.promotions() if r["promoted"]]
    assert promoted == [a.version, b.version, c.version]
    assert promoted[-1] == registry.champion().version  # type: ignore[union-attr]


def test_leftover_temp_file_from_a_crashed_write_keeps_the_old_champion(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    old = registry.register(_model_dir(tmp_path / "a", 1))
    registry.force_champion(old)
    (registry.root / ".champion.x1y2z3").write_text('{"version": "half-writ')
    assert registry.champion() == old


def test_interrupted_promotion_keeps_the_old_champion(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = registry.register(_model_dir(tmp_path / "a", 1))
    new = registry.register(_model_dir(tmp_path / "b", 2))
    registry.force_champion(old)
    before = registry.promotions()

    def killed(self: Path, target: Path) -> None:
        raise KeyboardInterrupt  # the process dies between writing the temp file and the rename

    monkeypatch.setattr(Path, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        registry.promote(new.version, _metrics(0.7, 0.8), _metrics(0.9, 0.9), policy=POLICY)
    monkeypatch.undo()
    assert registry.champion() == old
    assert registry.promotions() == before


def test_recorded_metrics_go_beside_the_version_and_leave_its_card_alone(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    version = registry.register(_model_dir(tmp_path / "a", 1), metrics={"validation": {"qwk": 0.7}})
    card = version.card_path.read_bytes()
    registry.record_metrics(version.version, "test", {"qwk": 0.65, "auc_koa": 0.9})
    updated = registry.record_metrics(version, "test", {"qwk": 0.66, "auc_koa": 0.91})
    registry.record_metrics(version, "validation", {"qwk": 0.72})
    assert version.card_path.read_bytes() == card
    assert updated.metrics == {"validation": {"qwk": 0.7}, "test": {"qwk": 0.66, "auc_koa": 0.91}}
    assert registry.get(version.version).metrics == {
        "validation": {"qwk": 0.72},
        "test": {"qwk": 0.66, "auc_koa": 0.91},
    }
    lines = (version.path / METRICS_LOG).read_text().splitlines()
    assert [json.loads(line)["split"] for line in lines] == ["test", "test", "validation"]
    assert updated.weights_sha256 == version.weights_sha256
    registry.verify(updated)
    assert [p.name for p in version.path.iterdir() if p.name.startswith(".")] == []


def test_code_revision_outside_git_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    assert code_revision() == "unknown"
