"""The LocalCluster koa's flows start: sized by the settings, serving nothing beyond loopback,
its workers started with koa's allocator settings."""

from __future__ import annotations

import importlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from distributed import Client

from flows.runners import WORKER_MALLOC_ENV, dask_task_runner
from koa_core.config import get_settings


def _status_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _malloc_environ() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in WORKER_MALLOC_ENV}


def test_local_cluster_serves_health_on_loopback_and_tunes_worker_malloc(
    koa_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOA_DASK_WORKERS", "1")
    get_settings.cache_clear()
    runner = dask_task_runner()
    module, name = str(runner.cluster_class).rsplit(".", 1)
    cluster_class = getattr(importlib.import_module(module), name)
    with cluster_class(**runner.cluster_kwargs) as cluster:
        assert len(cluster.workers) == 1
        bound = [sock.getsockname()[:2] for sock in cluster.scheduler.http_server._sockets.values()]
        assert bound and all(host == "127.0.0.1" and port != 8787 for host, port in bound)
        base = f"http://127.0.0.1:{bound[0][1]}"
        assert _status_code(f"{base}/health") == 200
        assert _status_code(f"{base}/status") == 404
        assert (koa_home / "dask").is_dir()
        with Client(cluster) as client:
            environs = client.run(_malloc_environ)
        assert list(environs.values()) == [WORKER_MALLOC_ENV]
