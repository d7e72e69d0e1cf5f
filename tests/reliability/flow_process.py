"""Run the nightly flow in its own process, optionally with a fault injected at a write point.

``python -m tests.reliability.flow_process YYYY-MM-DD [FAULT MARKER_DIR]``; the environment
carries ``KOA_*``, ``PREFECT_API_URL`` and ``KOA_DASK_ADDRESS`` (see ``helpers``). Faults
(test-only wrappers around koa_core.storage.results and .transaction, installed in this
process only):

* ``kill-mid-parquet``: SIGKILL itself after writing half of the first Parquet file into
  the results work dir (a torn file, as a power cut or OOM kill would leave).
* ``kill-between-tables``: SIGKILL itself after the commit record is written and the scores
  partition swapped in, before the quarantine partition and the runs file are.
* ``pause-in-write``: at the night's commit, touch ``MARKER_DIR/paused`` and wait
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

from koa_core.storage import results, transaction

_real_parquet = results._write_parquet_file
_real_publish = transaction._publish
_real_commit = transaction.commit


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _torn_parquet(path: Path, table: Any) -> None:
    _real_parquet(path, table)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _die()


def _install(fault: str, markers: Path) -> None:
    calls: list[str] = []

    def kill_between(root: Path, move: transaction.Move) -> None:
        calls.append(move.final)
        if len(calls) == 2:
            _die()
        _real_publish(root, move)

    def pause(*args: Any, **kwargs: Any) -> None:
        (markers / "paused").touch()
        deadline = time.monotonic() + 120
        while not (markers / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _real_commit(*args, **kwargs)

    if fault == "kill-mid-parquet":
        results._write_parquet_file = _torn_parquet
    elif fault == "kill-between-tables":
        transaction._publish = kill_between
    elif fault == "pause-in-write":
        transaction.commit = pause
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
