"""A Dask worker SIGKILLed mid-run: the night still ends with every input settled once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from distributed import Client

from koa_core.config import get_settings
from koa_core.storage import results
from tests.reliability.helpers import (
    batch_folder,
    batch_inputs,
    outcome,
    partition_files,
    report,
    run_nightly,
    write_replicated_batch,
)

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]
WATCH_TIMEOUT_S = 300.0


class WorkerKiller:
    """Watches the scheduler; SIGKILLs the worker that first runs a task named ``stage``."""

    def __init__(self, address: str, stage: str) -> None:
        self.address, self.stage = address, stage
        self.killed: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with Client(self.address, timeout=30) as client:
            pids = client.run(os.getpid)  # before the run: no RPC between seeing and killing
            deadline = time.monotonic() + WATCH_TIMEOUT_S
            while not self._stop.is_set() and time.monotonic() < deadline:
                for worker, keys in client.processing().items():
                    if any(str(key).startswith(self.stage) for key in keys):
                        pid = pids[worker]
                        psutil.Process(pid).kill()
                        self.killed = (worker, pid)
                        return
                time.sleep(0.01)

    def __enter__(self) -> WorkerKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("stage", ["prepare", "score"])
def test_worker_killed_mid_stage(small_settings: Path, dask_cluster: str, stage: str) -> None:
    write_replicated_batch(batch_folder(), 24)  # six chunks: work remains after the kill
    inputs = batch_inputs()
    with WorkerKiller(dask_cluster, stage) as killer:
        try:
            summary = run_nightly(dask_cluster)
        except Exception as error:  # noqa: BLE001 - either outcome is allowed; it must be clean
            summary = None
            failure = error
    assert killer.killed is not None, f"no {stage} task was seen running"
    if summary is None:
        # Failing is allowed only loudly and with nothing written for the night.
        assert str(failure)
        assert partition_files(results.SCORES) == partition_files(results.QUARANTINE) == []
        print(f"\n[worker killed in {stage}] run failed cleanly: {failure!r}")
        return
    night = outcome(inputs)
    report(f"worker killed in {stage}", night)
    assert not night.lost and not night.duplicated
    assert summary["n_inputs"] == len(inputs) == summary["n_scored"]
    runs = results.read_table(results.RUNS, get_settings().results_dir).to_pandas()
    assert list(runs["status"]) == ["completed"]
