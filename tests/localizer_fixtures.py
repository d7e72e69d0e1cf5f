"""A tiny knee localizer for the suite, trained once per session on phantom films."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from koa_core.localize.labels import LabelledFilm, read_film_labels
from koa_core.localize.train import TrainedLocalizer, train_localizer
from koa_core.localize.train_config import LocalizerTrainConfig
from koa_core.phantom.film_writers import write_films
from koa_core.registry import LocalizerRegistry, ModelVersion

# The suite's nights are films at this spacing: coarse pixels keep them fast to write and read.
TEST_FILM_SPACING_MM = 0.6

# Geometric augmentation only (warp, flip, crop): the held-out films are phantoms too.
# About 15 s of one core: 16 epochs of 4 samples per film (measured).
TINY = LocalizerTrainConfig(
    epochs=16,
    repeats=4,
    batch_size=8,
    lr=5e-3,
    augment=False,
    threads=1,
)


@dataclass(frozen=True)
class FilmSet:
    """Films on disk with their labels table."""

    root: Path
    table: Path
    films: list[LabelledFilm]


def write_film_set(
    root: Path, bilateral: int, unilateral: int, seed: int, lateral: int = 0
) -> FilmSet:
    """Bilateral films at 0.8 mm, one-knee films and lateral views at 0.6 mm (so a narrow
    one-knee field still has the 256 pixels a side the reader asks for), in one labels
    table; the lateral views are named so by their ViewPosition."""
    counts = {"bilateral": bilateral, "unilateral": unilateral, "lateral": lateral}
    parts = [kind for kind, count in counts.items() if count]
    for offset, (kind, count) in enumerate(counts.items()):
        if count:
            spacing = 0.8 if kind == "bilateral" else 0.6
            write_films(root / kind, count, kind, seed + offset, spacing_mm=spacing)
    rows: list[dict[str, str]] = []
    for part in parts:
        with (root / part / "labels.csv").open(newline="") as handle:
            rows += [{**row, "file": f"{part}/{row['file']}"} for row in csv.DictReader(handle)]
    table = root / "labels.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return FilmSet(root, table, read_film_labels(root, table))


def train_tiny_localizer(root: Path) -> TrainedLocalizer:
    """A localizer trained for a few seconds on 50 films (seeds 100-102), 14 lateral views."""
    films = write_film_set(root, 20, 16, seed=100, lateral=14)
    return train_localizer(films.films, TINY)


def register_champion_localizer(source: Path) -> ModelVersion:
    """Register the localizer saved in ``source`` and make it champion (forced, logged)."""
    registry = LocalizerRegistry()
    version = registry.register(source)
    registry.force_champion(version, reason="test fixture: the suite's tiny localizer")
    return version
