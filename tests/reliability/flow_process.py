"""Run the nightly flow in its own process, optionally with a fault injected at a write point.

``python -m tests.reliability.flow_process YYYY-MM-DD [FAULT MARKER_DIR]``; the environment
carries ``KOA_*``, ``PREFECT_API_URL`` and ``KOA_DASK_ADDRESS`` (see ``helpers``). Faults
(test-only wrappers around koa_core.storage.results, installed in this process only):

* ``kill-mid-parquet``: SIGKILL itself after writing half of the first Parquet file into
  the results work dir (a torn file, as a power cut or OOM kill would leave).
* ``kill-between-tables``: SIGKILL itself after the scores partition was swapped in and
  before the quarantine partition is written.
* ``pause-in-write``: at the first partition write, touch ``MARKER_DIR/paused`` and wait
  (up to 120 s) for ``MARKER_DIR/release``, holding the batch lock all the while.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from koa_core.storage import results

_real_parquet = results._write_parquet_file
_real_write_partition = results.write_partition


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _torn_parquet(path: Path, table: Any) -> None:
    _real_parquet(path, table)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _die()


def _install(fault: str, markers: Path) -> None:
    calls: list[str] = []

    def kill_between(table_name: str, *args: Any, **kwargs: Any) -> Path:
        calls.append(table_name)
        if len(calls) == 2:
            _die()
        return _real_write_partition(table_name, *args, **kwargs)

    def pause(table_name: str, *args: Any, **kwargs: Any) -> Path:
        if not calls:
            calls.append(table_name)
            (markers / "paused").touch()
            deadline = time.monotonic() + 120
            while not (markers / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return _real_write_partition(table_name, *args, **kwargs)

    if fault == "kill-mid-parquet":
        results._write_parquet_file = _torn_parquet  # type: ignore[assignment]
    elif fault == "kill-between-tables":
        results.write_partition = kill_between  # type: ignore[assignment]
    elif fault == "pause-in-write":
        results.write_partition = pause  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main(argv: list[str]) -> None:
    batch_date = date.fromisoformat(argv[0])
    if len(argv) > 1:
        _install(argv[1], Path(argv[2]))
    from flows.nightly import nightly_scoring

    summary = nightly_scoring(batch_date=batch_date)
    print(f"completed n_inputs={summary['n_inputs']} n_scored={summary['n_scored']}")


if __name__ == "__main__":
    main(sys.argv[1:])
