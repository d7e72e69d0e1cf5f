"""End to end: the nightly flow over N uncompressed 2048 px DICOMs, img/s and fixed start-up.

Runs ``flows.nightly.nightly_scoring`` as ``koa score`` does (LocalCluster from the settings,
one temporary Prefect server shared with the workers) in a temporary ``KOA_HOME`` with an
untrained champion of the default architecture (speed does not depend on the weights).
After the run the Prefect API is asked for the task runs, which give:

* start-up: flow run start -> the first chunk settled, as the flow's progress records say
  (listing, headers, manifest checks, the workers' first imports and model load, the
  first chunk);
* steady img/s: images settled after the first chunk / time from then to the last chunk;
* task seconds per image by task name (where the time goes);
* CPU cores busy: CPU seconds of this process and its (reaped) Dask workers / wall time.

The flow runs three times by default (three batch dates), and every figure is also given
as the median of the runs.

The inputs are copies of a few dozen renders (see ``common.replicate``); each batch is a
folder of hard links to them, so several batch sizes share one set of files.

    .venv/bin/python benchmarks/end_to_end.py [--quick] [--n 2000] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from common import BENCH_DATE, machine, render_originals, replicate, reset_dir, table

CHUNK_ENV = "KOA_CHUNK_SIZE"
API_PAGE = 200  # the most task runs the Prefect API returns per request


def register_default_champion(home: Path) -> str:
    """An untrained default-architecture network registered as champion; its version id."""
    from koa_core.model.card import ModelCard
    from koa_core.model.checkpoint import save_torch
    from koa_core.model.network import build_model
    from koa_core.registry import ModelRegistry

    torch.manual_seed(0)
    card = ModelCard()
    source = home / "bench-model"
    source.mkdir(parents=True, exist_ok=True)
    save_torch(build_model(card).state_dict(), source / "weights.pt")
    (source / "card.json").write_text(json.dumps({"card": card.to_dict()}))
    registry = ModelRegistry()
    version = registry.register(source)
    registry.force_champion(version, reason="benchmark: an untrained network to time the pipeline")
    return version.version


def prepare_home(home: Path, pool_size: int, originals: int) -> list[Path]:
    """Point koa at ``home``, register the champion, write ``pool_size`` input files."""
    from koa_core.config import get_settings

    os.environ["KOA_HOME"] = str(home)
    get_settings.cache_clear()
    register_default_champion(home)
    renders = render_originals(reset_dir(home / "originals"), originals, seed=1)
    return replicate(renders, home / "pool", pool_size)


def link_batch(pool: list[Path], incoming: Path, day: date, n: int) -> None:
    """Batch ``day`` under ``incoming``: hard links to the first ``n`` pool files."""
    folder = reset_dir(incoming / day.isoformat())
    for path in pool[:n]:
        os.link(path, folder / path.name)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _task_runs(flow_run_id: str) -> tuple[Any, list[Any]]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        only_this = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        while page := client.read_task_runs(
            flow_run_filter=only_this, limit=API_PAGE, offset=len(runs)
        ):
            runs += page
    return flow_run, runs


class _ProgressLog(logging.Handler):
    """Keeps (time, images settled) of the flow's progress records, as ``koa score`` reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: list[tuple[datetime, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        from flows.nightly import PROGRESS_KEY

        done_total = getattr(record, PROGRESS_KEY, None)
        if done_total is not None:
            self.settled.append((datetime.fromtimestamp(record.created, UTC), done_total[0]))


def _timeline(flow_run_id: str, n: int, settled: list[tuple[datetime, int]]) -> dict[str, Any]:
    flow_run, runs = _task_runs(flow_run_id)
    busy: dict[str, float] = defaultdict(float)
    for run in runs:
        if run.start_time and run.end_time:
            busy[run.name.rsplit("-", 1)[0]] += (run.end_time - run.start_time).total_seconds()
    (first_at, first_done), (last_at, _) = settled[0], settled[-1]
    steady = (last_at - first_at).total_seconds()
    return {
        "startup_s": (first_at - flow_run.start_time).total_seconds(),
        "steady_img_s": (n - first_done) / steady if steady > 0 else float("nan"),
        "flow_s": (flow_run.end_time - flow_run.start_time).total_seconds(),
        "task_s_per_image": {name: seconds / n for name, seconds in busy.items()},
    }


def run_night(
    pool: list[Path], n: int, workers: int, day: date, knees_per_file: int = 1
) -> dict[str, Any]:
    """One nightly run over ``n`` files with ``workers`` Dask workers; its figures."""
    from flows.nightly import nightly_scoring
    from flows.runners import dask_task_runner
    from koa_core.config import get_settings

    os.environ["KOA_DASK_WORKERS"] = str(workers)
    get_settings.cache_clear()
    settings = get_settings()
    link_batch(pool, settings.incoming_dir, day, n)
    flow = nightly_scoring.with_options(task_runner=dask_task_runner(settings))
    progress, logger = _ProgressLog(), logging.getLogger("prefect.flow_runs")
    logger.addHandler(progress)
    cpu, start = _cpu_seconds(), time.perf_counter()
    try:
        summary = flow(batch_date=day)
    finally:
        logger.removeHandler(progress)
    wall = time.perf_counter() - start
    cores = (_cpu_seconds() - cpu) / wall
    if summary["n_scored"] != n * knees_per_file:
        raise RuntimeError(f"scored {summary['n_scored']} of {n}: {summary}")
    figures = _timeline(summary["run_id"], n, progress.settled)
    return {"n": n, "workers": workers, "wall_s": wall, "cores_busy": cores, **figures}


@contextmanager
def prefect_api() -> Iterator[None]:
    """The Prefect API ``koa score`` uses: one temporary server, shared with the workers.

    The server's own start is outside every figure (it happens before the flow run starts).
    Its database lives in a folder of its own for this process: Prefect reads
    ``PREFECT_HOME`` once, on import, so every run in the process shares it.
    """
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="koa-bench-prefect-"))
    from flows.local_run import prefect_api as shared_api

    with shared_api():
        yield


def report(results: list[dict[str, Any]], title: str) -> str:
    """The table of one or more runs."""
    rows = []
    for r in results:
        tasks = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in sorted(r["task_s_per_image"].items()))
        rows.append(
            [
                r["n"],
                r["workers"],
                f"{r['n'] / r['wall_s']:.1f}",
                f"{r['steady_img_s']:.1f}",
                f"{r['startup_s']:.1f}",
                f"{r['cores_busy']:.2f}",
                tasks,
            ]
        )
    return table(
        title,
        ["images", "workers", "img/s all", "img/s steady", "start-up s", "cores", "task ms/img"],
        rows,
    )


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over repeated runs, as a row of the same table."""
    numbers = ("wall_s", "cores_busy", "startup_s", "steady_img_s", "flow_s")
    median = {key: statistics.median(r[key] for r in results) for key in numbers}
    tasks = {name for r in results for name in r["task_s_per_image"]}
    median["task_s_per_image"] = {
        name: statistics.median(r["task_s_per_image"].get(name, 0.0) for r in results)
        for name in tasks
    }
    return {**median, "n": results[0]["n"], "workers": f"median of {len(results)}"}


def run(
    quick: bool = False, n: int | None = None, workers: int = 2, repeats: int | None = None
) -> dict[str, Any]:
    """Generate the inputs, then run the flow ``repeats`` times (one night each); the figures
    of each run and their medians."""
    n = n or (200 if quick else 2000)
    repeats = repeats or (1 if quick else 3)
    with tempfile.TemporaryDirectory(prefix="koa-bench-e2e-") as tmp:
        pool = prepare_home(Path(tmp), n, 10 if quick else 50)
        with prefect_api():
            runs = [
                run_night(pool, n, workers, BENCH_DATE + timedelta(days=i)) for i in range(repeats)
            ]
    result = {"runs": runs, **median_run(runs)}
    chunk = os.environ.get(CHUNK_ENV, "default")
    result["table"] = report(
        runs + ([result] if repeats > 1 else []),
        f"End to end: nightly flow, {n} uncompressed 2048 px DICOMs, chunk {chunk} ({machine()})",
    )
    return result


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 images instead of 2,000")
    parser.add_argument("--n", type=int, default=None, help="images in the batch")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers")
    parser.add_argument("--repeats", type=int, default=None, help="runs (default 3, quick 1)")
    args = parser.parse_args()
    run(args.quick, args.n, args.workers, args.repeats)


if __name__ == "__main__":
    main()
