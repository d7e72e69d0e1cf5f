"""Every benchmark in one run (what ``make bench`` runs); prints each table with its ratios.

    .venv/bin/python benchmarks/run_all.py [--quick] [--skip NAME ...]

The full run renders and copies 4,000 2048 px DICOMs (about 34 GB of hard-linked
inputs in a temporary folder) and takes tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import time

import decode
import delivery
import end_to_end
import kernel
import scaling
import training
from common import machine

BENCHMARKS = {
    "kernel": kernel.run,
    "decode": decode.run,
    "training": training.run,
    "end_to_end": end_to_end.run,
    "scaling": scaling.run,
    "delivery": delivery.run,
}


def main() -> None:
    """Run the benchmarks in turn, then print all their tables together."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs of each")
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(BENCHMARKS))
    args = parser.parse_args()
    tables = []
    for name, run in BENCHMARKS.items():
        if name in args.skip:
            continue
        start = time.perf_counter()
        figures = run(quick=args.quick)
        tables.append(figures.get("roofline_table", ""))
        tables.append(f"{figures['table']}\n({name}: {time.perf_counter() - start:.0f} s)")
    mode = "--quick" if args.quick else "full"
    print(f"\n## koa benchmarks ({mode}) on {machine()}")
    print("\n".join(t for t in tables if t))


if __name__ == "__main__":
    main()
