"""End to end on whole films: bilateral films/s beside one-knee images/s, measured in one run.

The nightly flow (LocalCluster, one temporary Prefect server, as ``koa score`` runs it) over
N uncompressed bilateral films (0.15 mm, about 2,900 x 2,300 px, two knees each) and over N
uncompressed 2,048 px one-knee images, in a temporary ``KOA_HOME`` with an untrained default
grader (speed does not depend on its weights) and the demo's localizer trained for the run
(it must find the knees, or they would be quarantined, not timed). Printed:
films/s steady for each, their ratio (target >= 0.6), the localizer's share of per-film task
time (target <= 20 %), and the same bilateral night again with heatmaps, prediction sets and
SR/SC delivered to a folder, as a ratio of wall time (target <= 1.25): ``--pairs`` such
pairs of nights in turn, each pair's ratio and their median.

    .venv/bin/python benchmarks/films_end_to_end.py [--n 200] [--originals 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import (
    BENCH_DATE,
    machine,
    median_seconds,
    render_originals,
    replicate,
    reset_dir,
    table,
)
from end_to_end import prefect_api, register_default_champion, run_night

FILM_SPACING_MM = 0.15


def render_bilateral(out: Path, n: int) -> list[Path]:
    """``n`` distinct bilateral films at 0.15 mm as uncompressed DICOM files."""
    from koa_core.phantom import film_dataset, render_film, save_dicom

    paths = []
    for index in range(n):
        film = render_film("bilateral", 7_000 + index, spacing_mm=FILM_SPACING_MM)
        ds = film_dataset(film, key=("bench", index), patient_id=f"F{index}", study_date=BENCH_DATE)
        path = out / f"film-{index:05d}.dcm"
        save_dicom(ds, path, "explicit")
        paths.append(path)
    return paths


def champion_localizer(home: Path) -> Path:
    """Train the demo's localizer (on its films, a fifth of them lateral), make it champion."""
    from koa_core.localize.labels import read_film_labels
    from koa_core.localize.train import train_localizer
    from koa_core.registry import LocalizerRegistry
    from koa_core.workflows import demo

    films_dir = home / "loc-films"
    demo.write_localizer_films(films_dir)
    films = read_film_labels(films_dir, films_dir / "labels.csv")
    trained = train_localizer(films, demo.DEMO_LOCALIZER)
    registry = LocalizerRegistry()
    version = registry.register(trained.save(home / "loc-run"))
    registry.force_champion(version, reason="benchmark")
    return version.path


def localizer_ms(film: Path, localizer_dir: Path) -> float:
    """Median ms of ``find_knees`` on one decoded film (one thread)."""
    import torch

    from koa_core.io.reader import read_radiograph
    from koa_core.localize.find import find_knees, load_localizer

    torch.set_num_threads(1)
    radiograph = read_radiograph(film)
    spacing = radiograph.meta.pixel_spacing_mm[0]  # type: ignore[index]
    localizer = load_localizer(localizer_dir)
    return 1e3 * median_seconds(lambda: find_knees(radiograph.pixels, spacing, localizer), 9)


WORKER_TASKS = ("prepare", "score", "keep_results")


def _per_file_ms(run: dict[str, Any]) -> float:
    return 1e3 * sum(run["task_s_per_image"].get(name, 0.0) for name in WORKER_TASKS)


def _row(name: str, run: dict[str, Any]) -> list[str]:
    tasks = run["task_s_per_image"]
    each = ", ".join(f"{task} {1e3 * tasks[task]:.0f}" for task in WORKER_TASKS if task in tasks)
    return [
        name,
        f"{run['steady_img_s']:.1f}",
        f"{run['wall_s']:.1f}",
        f"{_per_file_ms(run):.0f} ({each})",
    ]


def report(runs: dict[str, dict[str, Any]], share: float, n: int) -> None:
    """The table and the three ratios."""
    one_knee, bilateral, delivered = runs["one"], runs["bilateral"], runs["delivered"]
    rows = [
        _row("one-knee 2048 px", one_knee),
        _row("bilateral 0.15 mm", bilateral),
        _row("bilateral + sets, heatmaps, SR/SC to a folder", delivered),
    ]
    header = ["night", "files/s steady", "wall s", "task ms/file"]
    table(f"Films end to end, {n} files per night ({machine()})", header, rows)
    ratio = bilateral["steady_img_s"] / one_knee["steady_img_s"]
    print(f"bilateral films/s / one-knee images/s: {ratio:.2f} (target >= 0.6)")
    print(f"localizer share of per-film task time: {share:.0%} (target <= 20 %)")


Pair = tuple[dict[str, Any], dict[str, Any]]


def bilateral_pairs(films: list[Path], n: int, outbox: Path, count: int) -> list[Pair]:
    """``count`` bilateral nights without then with results delivered, one after the other:
    this VM's speed drifts by half between minutes, so each ratio compares neighbours."""
    from koa_core.config import get_settings

    pairs = []
    night = BENCH_DATE
    for _ in range(count):
        nights = []
        for deliver in (False, True):
            if deliver:
                os.environ["KOA_DELIVER_TO"] = str(outbox)
            else:
                os.environ.pop("KOA_DELIVER_TO", None)
            get_settings.cache_clear()
            night += timedelta(days=1)
            nights.append(run_night(films, n, 2, night, knees_per_file=2))
        pairs.append((nights[0], nights[1]))
    return pairs


def report_pairs(pairs: list[Pair]) -> None:
    """Each pair's wall ratio and their median (the figure to quote)."""
    ratios = [delivered["wall_s"] / plain["wall_s"] for plain, delivered in pairs]
    each = ", ".join(
        f"{plain['wall_s']:.1f} -> {delivered['wall_s']:.1f} s ({ratio:.2f})"
        for (plain, delivered), ratio in zip(pairs, ratios, strict=True)
    )
    print(f"pairs without -> with results delivered: {each}")
    median = statistics.median(ratios)
    print(f"median wall ratio over {len(pairs)} pairs: {median:.2f} (target <= 1.25)")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="files per night")
    parser.add_argument(
        "--pairs", type=int, default=3, help="bilateral nights without/with results, in turn"
    )
    parser.add_argument("--originals", type=int, default=12, help="distinct renders per kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="koa-bench-films-") as tmp:
        home = Path(tmp)
        os.environ["KOA_HOME"] = str(home)
        from koa_core.config import get_settings

        get_settings.cache_clear()
        register_default_champion(home)
        localizer = champion_localizer(home)
        renders = render_bilateral(reset_dir(home / "films"), args.originals)
        films = replicate(renders, home / "fp", args.n)
        knees = render_originals(reset_dir(home / "knees"), args.originals, seed=1)
        images = replicate(knees, home / "kp", args.n)
        with prefect_api():
            one = run_night(images, args.n, 2, BENCH_DATE)
            pairs = bilateral_pairs(films, args.n, home / "outbox", args.pairs)
        runs = {"one": one, "bilateral": pairs[0][0], "delivered": pairs[0][1]}
        share = localizer_ms(films[0], localizer) / _per_file_ms(runs["bilateral"])
        report(runs, share, args.n)
        report_pairs(pairs)


if __name__ == "__main__":
    main()
