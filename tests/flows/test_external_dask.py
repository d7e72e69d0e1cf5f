"""The nightly flow against an external Dask scheduler: scoring runs only on the GPU worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from distributed import Client, get_task_stream

from koa_core.config import get_settings
from koa_core.phantom import write_nightly_batch
from koa_core.storage import results
from tests.flows.models import register_tiny_champion

BATCH_DATE = date(2026, 11, 26)
pytestmark = pytest.mark.usefixtures("prefect_api")


def _dask(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stream:
        return subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


def _address(scheduler_file: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        if scheduler_file.exists():
            try:
                return str(json.loads(scheduler_file.read_text())["address"])
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.2)
    raise TimeoutError(f"dask scheduler did not write {scheduler_file}")


@pytest.fixture
def external_cluster(tmp_path: Path) -> Iterator[str]:
    """``dask scheduler`` plus two ``dask worker``s, one started with ``--resources GPU=1``."""
    scheduler_file = tmp_path / "scheduler.json"
    common = ("--scheduler-file", str(scheduler_file))
    processes = [
        _dask(
            "scheduler",
            *common,
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            log=tmp_path / "scheduler.log",
        )
    ]
    try:
        address = _address(scheduler_file, time.monotonic() + 60)
        for name, extra in (("cpu", ()), ("gpu", ("--resources", "GPU=1"))):
            processes.append(
                _dask(
                    "worker",
                    *common,
                    "--name",
                    name,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    *extra,
                    log=tmp_path / f"worker-{name}.log",
                )
            )
        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_scoring_tasks_run_only_on_the_gpu_worker(
    external_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOA_DASK_ADDRESS", external_cluster)
    monkeypatch.setenv("KOA_GPU_RESOURCE", "true")
    monkeypatch.setenv("KOA_INPUT_SIZE", "64")
    monkeypatch.setenv("KOA_CHUNK_SIZE", "2")
    get_settings.cache_clear()
    write_nightly_batch(get_settings().incoming_dir, 8, seed=5, batch_date=BATCH_DATE)
    register_tiny_champion(64)

    from flows.nightly import nightly_scoring
    from flows.runners import dask_task_runner

    with Client(external_cluster) as client, get_task_stream(client) as stream:
        summary = nightly_scoring.with_options(task_runner=dask_task_runner())(
            batch_date=BATCH_DATE
        )
        workers = {address: w["name"] for address, w in client.scheduler_info()["workers"].items()}
    placed = [(task["key"], task["worker"]) for task in stream.data]
    scoring = {workers[worker] for key, worker in placed if str(key).startswith("score-")}
    preparing = [key for key, _ in placed if str(key).startswith("prepare-")]
    assert summary["n_scored"] == 8
    assert len(preparing) == 4
    assert scoring == {"gpu"}
    assert results.read_scores(get_settings().results_dir, BATCH_DATE).num_rows == 8
