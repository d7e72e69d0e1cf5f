"""The demo grader's domain gap: trained on single-knee renders or on knees cut from films.

Writes the demo's training set both ways (``write_kl_folders``, 600 single-knee renders, the
old demo set; ``write_film_kl_folders``, the knees of 375 whole films, the new one), timing
each; trains the demo recipe (``DEMO_TRAINING``) on each; and grades the ROIs of fresh films
(other seeds, clean labels, cut at the true joints, as the scorer cuts them around the
localizer's joints) with both models. Synthetic phantoms only: nothing here is a
real-patient figure.

    .venv/bin/python benchmarks/film_roi_domain.py --fresh-films 150
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score

from common import machine, ratio  # isort: skip


def _timed(write: object) -> tuple[float, float]:
    """(wall, CPU) seconds of ``write()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    write()  # type: ignore[operator]
    return time.perf_counter() - wall, time.process_time() - cpu


def _fresh_qwk(version: object, fresh: Path) -> tuple[float, float, int]:
    """QWK and accuracy of a registered model on every knee of ``fresh``, and the count."""
    from koa_core.data.datasets import load_dataset
    from koa_core.model.checkpoint import load_model
    from koa_core.model.inference import predict_dataset

    card = version.model_card()  # type: ignore[attr-defined]
    dataset = load_dataset(fresh, card.input_size)
    images = torch.cat([split.images for split in dataset.splits.values()])
    labels = torch.cat([split.labels for split in dataset.splits.values()]).numpy()
    model = load_model(version.weights_path, card, "cpu")  # type: ignore[attr-defined]
    predicted = predict_dataset(model, card, images).argmax(axis=1)
    qwk = float(cohen_kappa_score(labels, predicted, weights="quadratic"))
    return qwk, float(np.mean(labels == predicted)), len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fresh-films", type=int, default=150)
    parser.add_argument("--fresh-seed", type=int, default=2031)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="koa-filmroi-"))
    os.environ["KOA_HOME"] = str(home)
    from koa_core.phantom import write_film_kl_folders, write_kl_folders
    from koa_core.registry import ModelRegistry
    from koa_core.workflows import demo
    from koa_core.workflows.challenger import train_challenger

    print(machine())
    sets = {
        "single-knee renders (600)": (
            home / "renders",
            lambda: write_kl_folders(home / "renders", 600, seed=7, label_noise=0.05),
        ),
        f"film ROIs ({demo.DEMO_TRAINING_FILMS} films)": (
            home / "films",
            lambda: write_film_kl_folders(
                home / "films",
                demo.DEMO_TRAINING_FILMS,
                seed=7,
                label_noise=0.05,
                spacing_mm=demo.DEMO_FILM_SPACING_MM,
            ),
        ),
    }
    fresh = home / "fresh"
    write_film_kl_folders(fresh, args.fresh_films, args.fresh_seed, jitter_mm=0.0, spacing_mm=0.5)
    rows = []
    for name, (root, write) in sets.items():
        wall, cpu = _timed(write)
        knees = len(list(root.glob("*/*/*.png")))
        started = time.perf_counter()
        challenger = train_challenger(demo.DEMO_TRAINING, root, registry=ModelRegistry())
        trained = time.perf_counter() - started
        qwk, accuracy, count = _fresh_qwk(challenger.version, fresh)
        val = challenger.validation.metrics.qwk
        rows.append((name, knees, wall, cpu, trained, val, qwk, accuracy, count))
    for name, knees, wall, cpu, trained, val, qwk, accuracy, count in rows:
        print(
            f"{name}: {knees} knees written in {wall:.1f} s wall / {cpu:.1f} s CPU;"
            f" trained in {trained:.0f} s; validation QWK {val:.3f};"
            f" fresh film ROIs ({count} knees) QWK {qwk:.3f}, accuracy {accuracy:.3f}"
        )
    print(f"film ROI set write time vs renders: {ratio(rows[1][2], rows[0][2])}")


if __name__ == "__main__":
    main()
