"""Train a knee localizer on a labelled film folder and register it (optionally promote it)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from koa_core.config import get_settings
from koa_core.localize.labels import find_labels_table, read_film_labels
from koa_core.localize.train import Progress, TrainedLocalizer, train_localizer
from koa_core.localize.train_config import LocalizerTrainConfig
from koa_core.registry.champion import PromotionRecord
from koa_core.registry.localizers import LocalizerRegistry
from koa_core.registry.store import ModelVersion


@dataclass(frozen=True)
class LocalizerOutcome:
    """A registered localizer, its training run, and the promotion decision if one was asked."""

    version: ModelVersion
    trained: TrainedLocalizer
    promotion: PromotionRecord | None


def train_and_register_localizer(
    data: Path,
    config: LocalizerTrainConfig,
    *,
    labels: Path | None = None,
    promote: bool = False,
    registry: LocalizerRegistry | None = None,
    progress: Progress | None = None,
) -> LocalizerOutcome:
    """Read the joint labels, train, register the localizer; apply the rule if ``promote``.

    Args:
        data: the folder holding the films.
        config: hyper-parameters.
        labels: the joint-centre table (default ``data/labels.csv`` or ``.parquet``).
        promote: apply the localizer promotion rule (the decision is logged either way).
        registry: default ``LocalizerRegistry()``.
        progress: called after every epoch.

    Raises:
        DatasetError: the table or a film cannot be used.
    """
    registry = registry or LocalizerRegistry()
    films = read_film_labels(data, labels or find_labels_table(data))
    trained = train_localizer(films, config, progress)
    scratch = get_settings().runs_dir / "localizer-training"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=scratch) as out_dir:
        version = registry.register(trained.save(Path(out_dir)))
    record = registry.promote(version) if promote else None
    return LocalizerOutcome(version, trained, record)
