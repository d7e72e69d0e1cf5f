"""Scaling: the nightly flow with 1 and 2 Dask workers, and time against batch size.

Per-image time should be flat in the batch size once the fixed start-up is paid: the
script fits wall time = a + b * images and prints R^2 and each size's per-image time
relative to the smallest batch. All runs share one temporary Prefect server and one set
of input files (``end_to_end``).

    .venv/bin/python benchmarks/scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import BENCH_DATE, fit_r2, machine, ratio, table
from end_to_end import prefect_api, prepare_home, report, run_night

FULL_SIZES = (500, 1000, 2000, 4000)
QUICK_SIZES = (50, 100, 200)


def run(quick: bool = False) -> dict[str, Any]:
    """The worker comparison and the batch-size series; the figures."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    with tempfile.TemporaryDirectory(prefix="koa-bench-scaling-") as tmp:
        pool = prepare_home(Path(tmp), max(sizes), 10 if quick else 50)
        days = iter(BENCH_DATE + timedelta(days=i) for i in range(1, 100))
        with prefect_api():
            workers = [run_night(pool, sizes[-2], count, next(days)) for count in (1, 2)]
            series = [run_night(pool, n, 2, next(days)) for n in sizes]
    worker_table = report(workers, f"Scaling: 1 vs 2 Dask workers, {sizes[-2]} images")
    slope, intercept, r2 = fit_r2([r["n"] for r in series], [r["wall_s"] for r in series])
    first = series[0]["wall_s"] / series[0]["n"]
    rows = [
        [
            r["n"],
            f"{r['wall_s']:.1f}",
            f"{r['wall_s'] / r['n'] * 1e3:.0f}",
            ratio(r["wall_s"] / r["n"], first),
        ]
        for r in series
    ]
    rows.append(["fit", f"{intercept:.1f} s + {slope * 1e3:.0f} ms/img", "", f"R^2 {r2:.3f}"])
    size_table = table(
        f"Scaling: wall time against batch size, 2 workers ({machine()})",
        ["images", "wall s", "ms/img", "per-image vs smallest"],
        rows,
    )
    speedup = workers[1]["steady_img_s"] / workers[0]["steady_img_s"]
    return {
        "workers": workers,
        "series": series,
        "r2": r2,
        "worker_speedup": speedup,
        "table": worker_table + "\n" + size_table,
    }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
