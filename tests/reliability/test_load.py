"""Load: a large night of small images runs in bounded memory and loses nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from distributed import Client

from koa_core.config import get_settings
from tests.reliability.helpers import (
    RssSampler,
    batch_folder,
    batch_inputs,
    outcome,
    report,
    run_nightly,
    write_replicated_batch,
)

pytestmark = pytest.mark.usefixtures("prefect_api")
SMALL_NIGHT, SOAK_NIGHT = 300, int(os.environ.get("KOA_SOAK_IMAGES", "10000"))
# Bounds far above what a 256 px image needs, far below what keeping a night in memory would.
MAX_WORKER_RSS = 1536 * 2**20
MAX_FLOW_RSS = 3072 * 2**20


def _load_night(n: int, dask_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOA_CHUNK_SIZE", "64")
    get_settings.cache_clear()
    write_replicated_batch(batch_folder(), n)
    inputs = batch_inputs()
    with Client(dask_cluster) as client:
        workers = list(client.run(os.getpid).values())
    sampler = RssSampler({"workers": workers, "scheduler_and_flow": [os.getpid()]})
    with sampler.running():
        summary = run_nightly(dask_cluster)
    night = outcome(inputs)
    report(f"load {n}", night)
    print(f"[load {n}] {sampler.line()}")
    assert summary["n_scored"] == len(night.scores) == n
    assert not night.lost and not night.duplicated and night.quarantine.empty
    assert sampler.peaks["workers"] < MAX_WORKER_RSS
    assert sampler.peaks["scheduler_and_flow"] < MAX_FLOW_RSS


@pytest.mark.slow
def test_small_load_night(
    small_settings: Path, dask_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load_night(SMALL_NIGHT, dask_cluster, monkeypatch)


@pytest.mark.soak
def test_soak_night(
    small_settings: Path, dask_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load_night(SOAK_NIGHT, dask_cluster, monkeypatch)
