"""The model registry: immutable versions with provenance, a champion pointer and promotions.

Layout under ``Settings().models_dir``::

    versions/<version>/weights.pt    state_dict, as training wrote it
    versions/<version>/card.json     model card, provenance, metrics per split
    champion                         JSON pointer to the serving version
    promotions.jsonl                 one line per promotion decision

Every write is atomic (a temporary name, fsync, ``os.replace``), so a crash leaves the
registry as it was before the write or as it is after it, never in between.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from koa_core.config import get_settings
from koa_core.errors import CorruptCheckpointError, ModelNotFoundError
from koa_core.model.checkpoint import SIDECAR_SUFFIX, verify_sidecar
from koa_core.schema import CARD_NAME, WEIGHTS_NAME
from koa_core.storage.files import append_json_line, atomic_write_bytes, file_sha256

if TYPE_CHECKING:
    from koa_core.model.card import ModelCard

log = logging.getLogger(__name__)

VERSIONS_DIR = "versions"
CHAMPION_POINTER = "champion"
PROMOTIONS_LOG = "promotions.jsonl"
# Rounding in the metrics must not flip a decision that sits exactly on a threshold.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class ModelVersion:
    """One registered model: its directory and the parsed ``card.json``."""

    version: str
    path: Path
    document: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_NAME

    @property
    def card_path(self) -> Path:
        return self.path / CARD_NAME

    @property
    def created_at(self) -> str:
        return str(self.document.get("created_at", ""))

    @property
    def weights_sha256(self) -> str:
        return str(self.document.get("weights_sha256", ""))

    @property
    def metrics(self) -> Mapping[str, Mapping[str, Any]]:
        """Metrics per split (``validation``, ``test``, ...), as recorded so far."""
        return dict(self.document.get("metrics", {}))

    def model_card(self) -> ModelCard:
        """The ``ModelCard`` needed to build the network for these weights."""
        from koa_core.model.card import read_card

        return read_card(self.card_path)


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a challenger replaces the champion, and why."""

    promote: bool
    reason: str


def _test_set_signature(metrics: Mapping[str, Any]) -> tuple[int, ...] | None:
    rows = metrics.get("per_class")
    if rows:
        return tuple(int(row["support"]) for row in rows)
    return (int(metrics["n_samples"]),) if "n_samples" in metrics else None


def should_promote(
    champion_metrics: Mapping[str, Any] | None,
    challenger_metrics: Mapping[str, Any],
    min_qwk_gain: float,
    max_auc_loss: float,
) -> PromotionDecision:
    """The promotion rule, in one place.

    A challenger replaces the champion only if, on the same test set, its QWK is at least
    ``min_qwk_gain`` higher and its AUC(KL>=2) at most ``max_auc_loss`` lower. With no
    champion, the first model is promoted. Both metric dicts are
    ``EvaluationMetrics.to_dict()`` outputs (keys ``qwk``, ``auc_koa``, ``per_class``).
    """
    if champion_metrics is None:
        return PromotionDecision(True, "no champion yet: the first model is promoted")
    old_set, new_set = (
        _test_set_signature(champion_metrics),
        _test_set_signature(challenger_metrics),
    )
    if old_set is not None and new_set is not None and old_set != new_set:
        return PromotionDecision(
            False, f"not the same test set (grade counts {old_set} vs {new_set})"
        )
    keys = ("qwk", "auc_koa")
    values = [
        metrics.get(key) for metrics in (champion_metrics, challenger_metrics) for key in keys
    ]
    if any(value is None for value in values):
        return PromotionDecision(False, "QWK or AUC(KL>=2) undefined on this test set")
    old_qwk, old_auc, new_qwk, new_auc = (float(value) for value in values if value is not None)
    gain, loss = new_qwk - old_qwk, old_auc - new_auc
    summary = (
        f"QWK {old_qwk:.4f} -> {new_qwk:.4f} ({gain:+.4f}), "
        f"AUC(KL>=2) {old_auc:.4f} -> {new_auc:.4f} ({-loss:+.4f})"
    )
    if gain < min_qwk_gain - TOLERANCE:
        return PromotionDecision(False, f"{summary}: QWK gain below the required {min_qwk_gain:g}")
    if loss > max_auc_loss + TOLERANCE:
        return PromotionDecision(False, f"{summary}: AUC loss above the allowed {max_auc_loss:g}")
    return PromotionDecision(True, f"{summary}: beats the champion")


def code_revision() -> str:
    """``git rev-parse HEAD`` of the koa checkout, or ``"unknown"`` outside git."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def _json_bytes(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def _source_files(source: Path | tuple[Path, Path]) -> tuple[Path, Path]:
    weights, card = (
        (source / WEIGHTS_NAME, source / CARD_NAME) if isinstance(source, Path) else source
    )
    for path in (weights, card):
        if not path.is_file():
            raise ModelNotFoundError(f"cannot register: {path} does not exist")
    return weights, card


class ModelRegistry:
    """Registered model versions under ``root`` (default ``Settings().models_dir``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else get_settings().models_dir

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS_DIR

    def _lock(self) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / ".registry.lock", timeout=60)

    def register(
        self,
        source: Path | tuple[Path, Path],
        *,
        metrics: Mapping[str, Mapping[str, Any]] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        data_fingerprint: Mapping[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> ModelVersion:
        """Copy a trained model into a new immutable version.

        Args:
            source: a training output directory holding ``weights.pt`` and ``card.json``,
                or a ``(weights, card_json)`` pair.
            metrics: metrics per split, e.g. ``{"validation": {...}, "test": {...}}``.
            hyperparameters: replaces the card's ``hyperparameters`` entry when given.
            data_fingerprint: replaces the card's ``data`` entry (files + labels) when given.
            created_at: registration time (UTC); now when omitted.

        Raises:
            ModelNotFoundError: the weights or card are missing.
            CorruptCheckpointError: the weights fail their sha256 sidecar.
        """
        weights, card = _source_files(source)
        verify_sidecar(weights)
        data = weights.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        created = (created_at or datetime.now(UTC)).astimezone(UTC)
        document = self._document(card, digest, created, metrics, hyperparameters, data_fingerprint)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.versions_dir))
        try:
            atomic_write_bytes(staging / WEIGHTS_NAME, data)
            sidecar = weights.with_name(weights.name + SIDECAR_SUFFIX)
            if sidecar.is_file():
                atomic_write_bytes(staging / (WEIGHTS_NAME + SIDECAR_SUFFIX), sidecar.read_bytes())
            return self._publish(staging, document, f"{created:%Y%m%dT%H%M%SZ}-{digest[:6]}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _document(
        card: Path,
        digest: str,
        created: datetime,
        metrics: Mapping[str, Mapping[str, Any]] | None,
        hyperparameters: Mapping[str, Any] | None,
        data_fingerprint: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        source = json.loads(card.read_text(encoding="utf-8"))
        # A bare model card (no "card" entry) is wrapped so every version has one shape.
        document: dict[str, Any] = dict(source) if "card" in source else {"card": source}
        document.update(
            created_at=created.isoformat(),
            code_revision=code_revision(),
            weights_sha256=digest,
            metrics={split: dict(values) for split, values in (metrics or {}).items()},
        )
        if hyperparameters is not None:
            document["hyperparameters"] = dict(hyperparameters)
        if data_fingerprint is not None:
            document["data"] = dict(data_fingerprint)
        return document

    def _publish(self, staging: Path, document: dict[str, Any], base_id: str) -> ModelVersion:
        """Rename the staged directory into place under the first free version id."""
        for attempt in range(100):
            version = base_id if attempt == 0 else f"{base_id}.{attempt}"
            target = self.versions_dir / version
            if target.exists():
                continue
            atomic_write_bytes(staging / CARD_NAME, _json_bytes({"version": version, **document}))
            try:
                staging.replace(target)
            except OSError:
                # Another process published the same id between the check and the rename.
                if target.exists():
                    continue
                raise
            log.info("registered model version %s", version)
            return self._load(target)
        raise FileExistsError(f"no free version id for {base_id} in {self.versions_dir}")

    def _load(self, path: Path) -> ModelVersion:
        try:
            document = json.loads((path / CARD_NAME).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise CorruptCheckpointError(f"{path}: unreadable {CARD_NAME}: {error}") from error
        return ModelVersion(str(document.get("version", path.name)), path, document)

    def list_versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first (unreadable directories are logged, skipped)."""
        if not self.versions_dir.is_dir():
            return []
        versions = []
        for path in self.versions_dir.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                versions.append(self._load(path))
            except CorruptCheckpointError as error:
                log.warning("skipping %s", error)
        return sorted(versions, key=lambda v: (v.created_at, v.version))

    def latest(self) -> ModelVersion | None:
        """The most recently registered version, if any."""
        versions = self.list_versions()
        return versions[-1] if versions else None

    def champion(self) -> ModelVersion | None:
        """The version the champion pointer names, or None before the first promotion.

        Raises:
            ModelNotFoundError: the pointer names a version that no longer exists.
        """
        pointer = self.root / CHAMPION_POINTER
        if not pointer.is_file():
            return None
        try:
            version = json.loads(pointer.read_text(encoding="utf-8"))["version"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CorruptCheckpointError(f"{pointer}: unreadable champion pointer") from error
        return self._by_id(str(version))

    def _by_id(self, version: str) -> ModelVersion:
        path = self.versions_dir / version
        if version and not version.startswith(".") and "/" not in version and path.is_dir():
            return self._load(path)
        raise self._not_found(version)

    def _not_found(self, ref: str) -> ModelNotFoundError:
        known = ", ".join(v.version for v in self.list_versions()) or "none"
        return ModelNotFoundError(
            f"no model version {ref!r} in {self.root}; registered: {known}"
            " (a ref is a version id, 'champion', 'latest' or a version directory)"
        )

    def get(self, ref: str | Path) -> ModelVersion:
        """Resolve a version id, ``champion``, ``latest`` or a version directory path.

        Raises:
            ModelNotFoundError: nothing matches ``ref``; the message lists what exists.
        """
        if ref in ("champion", "latest"):
            found = self.champion() if ref == "champion" else self.latest()
            if found is None:
                raise self._not_found(str(ref))
            return found
        if isinstance(ref, Path) or os.sep in ref:
            path = Path(ref)
            if (path / CARD_NAME).is_file() and (path / WEIGHTS_NAME).is_file():
                return self._load(path)
            raise self._not_found(str(ref))
        return self._by_id(ref)

    def verify(self, version: str | Path | ModelVersion) -> ModelVersion:
        """Recompute the weights' sha256 and compare it with the one registered.

        Raises:
            CorruptCheckpointError: weights missing or changed since registration.
        """
        found = version if isinstance(version, ModelVersion) else self.get(version)
        if not found.weights_path.is_file():
            raise CorruptCheckpointError(f"{found.weights_path}: weights file is missing")
        actual = file_sha256(found.weights_path)
        if actual != found.weights_sha256:
            raise CorruptCheckpointError(
                f"model {found.version}: weights sha256 {actual[:12]} does not match the"
                f" registered {found.weights_sha256[:12] or 'none'}; the file was altered or"
                " truncated after registration"
            )
        return found

    def set_champion(self, version: str | Path | ModelVersion) -> ModelVersion:
        """Point ``champion`` at ``version`` after verifying its weights (atomic replace)."""
        found = self.verify(version)
        record = {"version": found.version, "promoted_at": datetime.now(UTC).isoformat()}
        atomic_write_bytes(self.root / CHAMPION_POINTER, _json_bytes(record))
        log.info("champion is now %s", found.version)
        return found

    def force_champion(self, version: str | Path | ModelVersion) -> ModelVersion:
        """Make ``version`` champion without the promotion rule, and log that it was forced.

        An operator's override is a promotion decision like any other: the audit trail in
        ``promotions.jsonl`` must show who the champion was and that no rule was applied.
        """
        with self._lock():
            current = self.champion()
            found = self.set_champion(version)
            append_json_line(
                self.root / PROMOTIONS_LOG,
                {
                    "at": datetime.now(UTC).isoformat(),
                    "challenger": found.version,
                    "champion": None if current is None else current.version,
                    "promoted": True,
                    "forced": True,
                    "reason": "forced by the operator, without the promotion rule",
                },
            )
        return found

    def promote(
        self,
        challenger_ref: str | Path | ModelVersion,
        champion_metrics: Mapping[str, Any] | None,
        challenger_metrics: Mapping[str, Any],
        *,
        min_qwk_gain: float | None = None,
        max_auc_loss: float | None = None,
    ) -> PromotionDecision:
        """Apply ``should_promote``, move the champion pointer if it says so, log the decision.

        Args:
            challenger_ref: the candidate version.
            champion_metrics: the current champion's metrics on the same test set; None
                only when there is no champion yet.
            challenger_metrics: the challenger's metrics on that test set.
            min_qwk_gain: default ``Settings.promotion_min_qwk_gain``.
            max_auc_loss: default ``Settings.promotion_max_auc_loss``.

        Raises:
            ValueError: a champion exists but no champion metrics were given.
        """
        settings = get_settings()
        gain = settings.promotion_min_qwk_gain if min_qwk_gain is None else min_qwk_gain
        loss = settings.promotion_max_auc_loss if max_auc_loss is None else max_auc_loss
        with self._lock():
            challenger = (
                challenger_ref
                if isinstance(challenger_ref, ModelVersion)
                else self.get(challenger_ref)
            )
            current = self.champion()
            if current is not None and champion_metrics is None:
                raise ValueError(f"champion {current.version} exists: pass its test metrics")
            if current is not None and current.version == challenger.version:
                decision = PromotionDecision(False, f"{challenger.version} is already the champion")
            else:
                decision = should_promote(
                    None if current is None else champion_metrics, challenger_metrics, gain, loss
                )
            if decision.promote:
                self.set_champion(challenger)
            append_json_line(
                self.root / PROMOTIONS_LOG,
                {
                    "at": datetime.now(UTC).isoformat(),
                    "challenger": challenger.version,
                    "champion": None if current is None else current.version,
                    "promoted": decision.promote,
                    "reason": decision.reason,
                    "min_qwk_gain": gain,
                    "max_auc_loss": loss,
                },
            )
        return decision

    def promotions(self) -> list[dict[str, Any]]:
        """Every recorded promotion decision, oldest first."""
        path = self.root / PROMOTIONS_LOG
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def record_metrics(
        self, version: str | Path | ModelVersion, split: str, metrics: Mapping[str, Any]
    ) -> ModelVersion:
        """Attach ``metrics`` for ``split`` to a version's card (atomic rewrite of card.json)."""
        with self._lock():
            found = self.get(version.path if isinstance(version, ModelVersion) else version)
            document = dict(found.document)
            document["metrics"] = {**document.get("metrics", {}), split: dict(metrics)}
            atomic_write_bytes(found.card_path, _json_bytes(document))
            return self._load(found.path)
