"""A tiny knee localizer for the suite: trained once per session on phantom films, saved."""

from __future__ import annotations

from pathlib import Path

from koa_core.localize.labels import read_film_labels
from koa_core.localize.train import train_localizer
from koa_core.localize.train_config import LocalizerTrainConfig
from koa_core.phantom.film_writers import write_films
from koa_core.registry import LocalizerRegistry, ModelVersion

# A few seconds of training: the flow tests exercise the pipeline around the localizer;
# the localizer's own accuracy is measured in benchmarks/localizer.py.
TINY_LOCALIZER = LocalizerTrainConfig(
    epochs=14,
    batch_size=16,
    lr=4e-3,
    mm_per_px=3.0,
    canvas_px=128,
    sigma_mm=10.0,
    augment=False,
    threads=1,
)
# Films the suite's nights are made of: coarse pixels keep them fast to write and read.
TEST_FILM_SPACING_MM = 0.6


def train_tiny_localizer(root: Path) -> Path:
    """Train on 36 mixed films under ``root``; the saved localizer's folder."""
    write_films(root / "films", 36, "mixed", seed=100, spacing_mm=TEST_FILM_SPACING_MM)
    films = read_film_labels(root / "films", root / "films" / "labels.csv")
    return train_localizer(films, TINY_LOCALIZER).save(root / "localizer")


def register_champion_localizer(source: Path) -> ModelVersion:
    """Register the localizer saved in ``source`` and make it champion (forced, logged)."""
    registry = LocalizerRegistry()
    version = registry.register(source)
    registry.force_champion(version, reason="test fixture: the suite's tiny localizer")
    return version
