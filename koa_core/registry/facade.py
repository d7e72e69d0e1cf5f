"""``ModelRegistry``: the version store, champion pointer, rule and annotations as one object."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from koa_core.config import get_settings
from koa_core.registry.annotations import append_metrics
from koa_core.registry.champion import ChampionPointer, PromotionRecord
from koa_core.registry.policy import PromotionDecision, PromotionPolicy, should_promote
from koa_core.registry.store import ModelVersion, VersionStore, load_version

CHAMPION = "champion"
FORCED_REASON = "forced by the operator, without the promotion rule"

Ref = str | Path | ModelVersion


class VersionRegistry:
    """Versions, champion pointer and promotion log under one ``root``, for any kind of model.

    ``ModelRegistry`` (graders) and ``LocalizerRegistry`` (knee localizers) add their own
    promotion rule; each kind lives under its own root, so each has its own champion.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = VersionStore(self.root)
        self.pointer = ChampionPointer(self.root)

    @property
    def versions_dir(self) -> Path:
        return self.store.versions_dir

    def register(self, source: Path | tuple[Path, Path], **provenance: Any) -> ModelVersion:
        """A new immutable version of a trained model (``VersionStore.register``'s options)."""
        return self.store.register(source, **provenance)

    def list_versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        return self.store.list_versions()

    def champion(self) -> ModelVersion | None:
        """The version the champion pointer names, or None before the first promotion.

        Raises:
            ModelNotFoundError: the pointer names a version that no longer exists.
        """
        version = self.pointer.version_id()
        return None if version is None else self.store.by_id(version)

    def get(self, ref: Ref) -> ModelVersion:
        """Resolve a version, id, ``champion``, ``latest`` or a version directory path.

        Raises:
            ModelNotFoundError: nothing matches ``ref``; the message lists what exists.
        """
        if isinstance(ref, ModelVersion):
            return load_version(ref.path)
        if ref == CHAMPION:
            found = self.champion()
            if found is None:
                raise self.store.not_found(CHAMPION)
            return found
        return self.store.get(ref)

    def verify(self, ref: Ref) -> ModelVersion:
        """The version, after checking its weights against the registered sha256.

        Raises:
            CorruptCheckpointError: weights missing or changed since registration.
        """
        return self.store.verify(self.get(ref))

    def force_champion(self, ref: Ref, *, reason: str = FORCED_REASON) -> ModelVersion:
        """Make ``ref`` champion without the promotion rule, and log that it was forced.

        An operator's override is a promotion decision like any other: the audit trail in
        ``promotions.jsonl`` shows who the champion was and that no rule was applied.

        Raises:
            CorruptCheckpointError: the version's weights fail their checksum.
        """
        with self.pointer.lock():
            found = self.verify(ref)
            current = self.pointer.version_id()
            record = PromotionRecord(
                found.version, current, promoted=True, forced=True, reason=reason, policy=None
            )
            self.pointer.decide(record)
        return found

    def promotions(self) -> list[dict[str, Any]]:
        """Every logged promotion decision, oldest first."""
        return self.pointer.history()

    def record_metrics(self, ref: Ref, split: str, metrics: Mapping[str, Any]) -> ModelVersion:
        """Record ``metrics`` for ``split`` beside the version; its card stays as registered."""
        found = self.get(ref)
        append_metrics(found.path, split, metrics)
        return load_version(found.path)


class ModelRegistry(VersionRegistry):
    """Registered grader versions under ``root`` (default ``Settings().models_dir``)."""

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root if root is not None else get_settings().models_dir)

    def promote(
        self,
        challenger: Ref,
        champion_metrics: Mapping[str, Any] | None,
        challenger_metrics: Mapping[str, Any],
        *,
        compared_with: str | None = None,
        policy: PromotionPolicy | None = None,
    ) -> PromotionRecord:
        """Apply ``should_promote``, move the champion pointer if it says so, log the decision.

        Args:
            challenger: the candidate version.
            champion_metrics: the current champion's metrics on the same test set; None
                only when there is no champion yet.
            challenger_metrics: the challenger's metrics on that test set.
            compared_with: the champion ``champion_metrics`` belong to; when given and the
                champion has changed since, the challenger is refused (compare again).
            policy: default ``PromotionPolicy.from_settings()``.

        Raises:
            ValueError: a champion exists but no champion metrics were given.
            CorruptCheckpointError: the challenger's weights fail their checksum.
        """
        policy = policy or PromotionPolicy.from_settings()
        with self.pointer.lock():
            found = self.verify(challenger)
            current = self.pointer.version_id()
            if current is not None and champion_metrics is None:
                raise ValueError(f"champion {current} exists: pass its test metrics")
            decision = self._refusal(found.version, current, compared_with) or should_promote(
                None if current is None else champion_metrics, challenger_metrics, policy
            )
            record = PromotionRecord.of_rule(found.version, current, decision, policy.to_dict())
            self.pointer.decide(record)
        return record

    @staticmethod
    def _refusal(
        challenger: str, current: str | None, compared_with: str | None
    ) -> PromotionDecision | None:
        """A refusal the rule cannot see from metrics alone, or None."""
        if current == challenger:
            return PromotionDecision(False, f"{challenger} is already the champion")
        if compared_with is not None and compared_with != current:
            return PromotionDecision(
                False, f"the champion changed from {compared_with} to {current}: compare again"
            )
        return None
