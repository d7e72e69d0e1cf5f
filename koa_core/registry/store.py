"""The immutable version store: register a trained model, resolve refs, verify integrity.

Layout under the registry root (``Settings().models_dir``)::

    versions/<version>/weights.pt      state_dict, as training wrote it
    versions/<version>/card.json       model card, provenance, registration-time metrics
    versions/<version>/metrics.jsonl   metrics recorded later (``annotations``)

A version directory is staged under a hidden name and renamed into place whole, and its
``card.json`` is never rewritten, so a crash leaves no half version behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from koa_core.errors import CorruptCheckpointError, ModelNotFoundError
from koa_core.model.checkpoint import SIDECAR_SUFFIX, verify_sidecar
from koa_core.registry.annotations import latest_metrics
from koa_core.registry.provenance import code_revision
from koa_core.schema import CARD_NAME, WEIGHTS_NAME
from koa_core.storage.files import atomic_write_bytes, file_sha256

if TYPE_CHECKING:
    from koa_core.model.card import ModelCard

log = logging.getLogger(__name__)

VERSIONS_DIR = "versions"
LATEST = "latest"


@dataclass(frozen=True)
class ModelVersion:
    """One registered model: its directory, the parsed ``card.json`` and later metrics."""

    version: str
    path: Path
    document: Mapping[str, Any] = field(compare=False, repr=False)
    annotations: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

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
    def metrics(self) -> dict[str, Mapping[str, Any]]:
        """Metrics per split: the card's, overlaid by the latest one recorded per split."""
        return {**self.document.get("metrics", {}), **self.annotations}

    def model_card(self) -> ModelCard:
        """The ``ModelCard`` needed to build the network for these weights."""
        from koa_core.model.card import read_card

        return read_card(self.card_path)


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


def load_version(path: Path) -> ModelVersion:
    """The version stored in ``path`` (a directory holding ``card.json``).

    Raises:
        CorruptCheckpointError: the card or its metrics log cannot be read.
    """
    try:
        document = json.loads((path / CARD_NAME).read_text(encoding="utf-8"))
        annotations = latest_metrics(path)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise CorruptCheckpointError(f"{path}: unreadable card or metrics: {error}") from error
    return ModelVersion(str(document.get("version", path.name)), path, document, annotations)


class VersionStore:
    """Registered model versions under ``root``; each is written once and never changed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS_DIR

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
            return load_version(target)
        raise FileExistsError(f"no free version id for {base_id} in {self.versions_dir}")

    def list_versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first (unreadable directories are logged, skipped)."""
        if not self.versions_dir.is_dir():
            return []
        versions = []
        for path in self.versions_dir.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                versions.append(load_version(path))
            except CorruptCheckpointError as error:
                log.warning("skipping %s", error)
        return sorted(versions, key=lambda v: (v.created_at, v.version))

    def latest(self) -> ModelVersion | None:
        """The most recently registered version, if any."""
        versions = self.list_versions()
        return versions[-1] if versions else None

    def by_id(self, version: str) -> ModelVersion:
        """The version with id ``version``.

        Raises:
            ModelNotFoundError: no such version; the message lists what exists.
        """
        path = self.versions_dir / version
        if version and not version.startswith(".") and "/" not in version and path.is_dir():
            return load_version(path)
        raise self.not_found(version)

    def not_found(self, ref: str) -> ModelNotFoundError:
        """The error for a ref that names nothing, listing the versions that exist."""
        known = ", ".join(v.version for v in self.list_versions()) or "none"
        return ModelNotFoundError(
            f"no model version {ref!r} in {self.root}; registered: {known}"
            " (a ref is a version id, 'champion', 'latest' or a version directory)"
        )

    def get(self, ref: str | Path) -> ModelVersion:
        """Resolve a version id, ``latest`` or a version directory path.

        Raises:
            ModelNotFoundError: nothing matches ``ref``; the message lists what exists.
        """
        if ref == LATEST:
            found = self.latest()
            if found is None:
                raise self.not_found(LATEST)
            return found
        if isinstance(ref, Path) or os.sep in ref:
            path = Path(ref)
            if (path / CARD_NAME).is_file() and (path / WEIGHTS_NAME).is_file():
                return load_version(path)
            raise self.not_found(str(ref))
        return self.by_id(ref)

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
