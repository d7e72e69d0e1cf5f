"""Train the knee localizer on synthetic whole films and measure it on 200 held-out films.

It trains on the demo's mix (``--lateral-share``: lateral views as negatives, a fifth of
the films). The held-out films come from a seed never used in training (mixed
bilateral/unilateral), with 40 lateral views apart, on which no knee must be found and
which the view head must name. Figures: joint-centre error (median, p99, max) in mm,
handedness (= side) accuracy, missed and invented knees, films called lateral
(``p_lateral >= 0.5``), per film kind; the same on perturbed copies of the films (inverted,
gamma, low contrast, noise) that training never saw as such; and the localizer's time per
film on one thread beside the time to decode the same file (the ratio is the localizer's
cost relative to the one step every film pays anyway).

Synthetic phantoms only: these figures say nothing about real patients' films.

    nice -n 10 .venv/bin/python benchmarks/localizer.py            # train, then evaluate
    nice -n 10 .venv/bin/python benchmarks/localizer.py --load DIR # evaluate a saved one
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import machine

from koa_core.io.reader import read_radiograph
from koa_core.localize.card import LocalizerCard
from koa_core.localize.evaluate import FilmResult, LocalizerMetrics, summarise
from koa_core.localize.film_input import network_tensor, prepare_film
from koa_core.localize.find import Localizer, find_knees, load_localizer
from koa_core.localize.labels import LabelledFilm, read_film_labels
from koa_core.localize.train import train_localizer
from koa_core.localize.train_config import LocalizerTrainConfig
from koa_core.phantom.film_writers import write_films
from koa_core.workflows.demo import DEMO_LOCALIZER_FILMS, DEMO_LOCALIZER_LATERAL_SHARE

TRAIN_SEED, TEST_SEED = 11, 424242
Perturb = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _scaled(pixels: np.ndarray) -> np.ndarray:
    low, high = np.percentile(pixels, (0.5, 99.5))
    return np.clip((pixels - low) / max(high - low, 1e-6), 0, 1)


PERTURBATIONS: dict[str, Perturb] = {
    "none": lambda p, r: p,
    "inverted": lambda p, r: p.max() - p,
    "gamma 0.5": lambda p, r: _scaled(p) ** 0.5,
    "gamma 2.0": lambda p, r: _scaled(p) ** 2.0,
    "contrast x0.3": lambda p, r: 0.5 + 0.3 * (_scaled(p) - 0.5),
    "noise 5 %": lambda p, r: _scaled(p) + r.normal(0, 0.05, p.shape),
}


def _films(
    root: Path, n: int, seed: int, spacing: float, kind: str = "mixed", lateral_share: float = 0.0
) -> list[LabelledFilm]:
    started = time.perf_counter()
    write_films(root, n, kind, seed, spacing_mm=spacing, lateral_share=lateral_share)
    print(f"wrote {n} films (seed {seed}, {spacing} mm) in {time.perf_counter() - started:.0f} s")
    return read_film_labels(root, root / "labels.csv")


def _train(root: Path, args: argparse.Namespace) -> Localizer:
    films = _films(
        root / "train", args.train_films, TRAIN_SEED, args.spacing, lateral_share=args.lateral_share
    )
    config = LocalizerTrainConfig(epochs=args.epochs, threads=args.threads, seed=args.seed)
    started, cpu = time.perf_counter(), time.process_time()
    trained = train_localizer(films, config)
    wall, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"trained in {wall:.0f} s wall ({cpu_s:.0f} s CPU, {args.threads} threads);"
        f" validation: {trained.validation}"
    )
    trained.save(root / "model")
    return trained.localizer


def _kind(film: LabelledFilm) -> str:
    return "bilateral" if len(film.knees) == 2 else "unilateral"


def _evaluate(localizer: Localizer, films: list[LabelledFilm]) -> dict[str, LocalizerMetrics]:
    results: dict[str, list[tuple[str, FilmResult]]] = {name: [] for name in PERTURBATIONS}
    for index, film in enumerate(films):
        pixels = read_radiograph(film.path).pixels
        for name, perturb in PERTURBATIONS.items():
            image = perturb(pixels, np.random.default_rng(index)).astype(np.float32)
            seen = find_knees(image, film.spacing_mm or 0.0, localizer)
            result = FilmResult(
                film.knees, seen.knees, film.spacing_mm or 0.0, film.lateral, seen.p_lateral
            )
            results[name].append((_kind(film), result))
    table = {}
    for name, rows in results.items():
        table[name] = summarise([r for _, r in rows])
        if name == "none":
            for kind in ("bilateral", "unilateral"):
                table[f"  {kind}"] = summarise([r for k, r in rows if k == kind])
    return table


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _timing(localizer: Localizer, films: list[LabelledFilm]) -> None:
    """Per-film medians on one thread: decode, find_knees, and its network forward alone."""
    torch.set_num_threads(1)
    card: LocalizerCard = localizer.card
    decode, find, forward = [], [], []
    for film in films[:40]:
        radiograph = read_radiograph(film.path)
        spacing = film.spacing_mm or 0.0
        prepared = prepare_film(radiograph.pixels, spacing, card.mm_per_px, card.normalisation)
        tensor = network_tensor(prepared.pixels, card.normalisation, localizer.model.min_stride)
        decode.append(_median_ms(lambda f=film: read_radiograph(f.path), 3))
        find.append(
            _median_ms(lambda r=radiograph, s=spacing: find_knees(r.pixels, s, localizer), 3)
        )
        with torch.inference_mode():
            forward.append(_median_ms(lambda t=tensor: localizer.model(t), 3))
    d, f, n = statistics.median(decode), statistics.median(find), statistics.median(forward)
    print(
        f"per film, 1 thread, median of 40 films: decode {d:.1f} ms, find_knees {f:.1f} ms"
        f" (network forward {n:.1f} ms); find_knees / decode = {f / d:.2f}"
    )


def _print(table: dict[str, LocalizerMetrics]) -> None:
    frame = pd.DataFrame(
        {
            "films": m.n_films,
            "knees": m.n_knees,
            "median mm": m.median_error_mm,
            "p99 mm": m.p99_error_mm,
            "max mm": m.max_error_mm,
            "side acc": m.handedness_accuracy,
            "missed": m.missed,
            "invented": m.invented,
            "called lateral": (m.lateral_flagged or 0) + (m.frontal_flagged or 0),
        }
        for m in table.values()
    )
    frame.index = list(table)
    print(frame.round(3).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-films", type=int, default=DEMO_LOCALIZER_FILMS)
    parser.add_argument(
        "--lateral-share",
        type=float,
        default=DEMO_LOCALIZER_LATERAL_SHARE,
        help="lateral views among the training films, as negatives (the demo's by default)",
    )
    parser.add_argument("--lateral-films", type=int, default=40, help="held-out lateral films")
    parser.add_argument("--test-films", type=int, default=200)
    parser.add_argument("--spacing", type=float, default=0.6)
    parser.add_argument("--epochs", type=int, default=LocalizerTrainConfig().epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--load", type=Path, help="a saved localizer directory: skip training")
    parser.add_argument("--work", type=Path, help="keep films and model here")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        root = args.work or Path(scratch)
        localizer = load_localizer(args.load) if args.load else _train(root, args)
        test = _films(root / "test", args.test_films, TEST_SEED, args.spacing)
        print(f"held-out films: {dict(Counter(_kind(f) for f in test))}, seed {TEST_SEED}")
        torch.set_num_threads(1)
        table = _evaluate(localizer, test)
        laterals = _films(root / "lateral", args.lateral_films, TEST_SEED, args.spacing, "lateral")
        table["lateral views"] = _evaluate(localizer, laterals)["none"]
        _print(table)
        print(
            "lateral views: 'invented' counts the knees found on them (target 0),"
            " 'called lateral' those the view head names (target all; 0 on the others)"
        )
        _timing(localizer, test)


if __name__ == "__main__":
    main()
