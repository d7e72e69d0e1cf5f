"""The Dask task runner koa's flows use: an existing scheduler when configured, else local."""

from __future__ import annotations

from typing import Any

import dask.config
from prefect_dask.task_runners import DaskTaskRunner

from koa_core.config import Settings, get_settings

# glibc allocator settings for the LocalCluster's workers, set before they spawn (glibc
# reads them once, at process start). Dask's default, MALLOC_TRIM_THRESHOLD_=65536, hands
# every freed block back to the OS and switches off glibc's adaptive mmap threshold, so
# each 8 MB DICOM read, pixel copy and float array faults its pages in anew: preparing an
# uncompressed 2048 px image took 45 ms under it, 20 ms with these (benchmarks/RESULTS.md).
# A worker then keeps at most ~128 MiB of freed heap; blocks of 32 MiB or more still come
# from (and go back to) the OS directly. Variables already in the environment win.
WORKER_MALLOC_ENV = {
    "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
}


def dask_task_runner(settings: Settings | None = None) -> DaskTaskRunner:
    """``KOA_DASK_ADDRESS`` when set, else a ``LocalCluster`` sized by the settings.

    The LocalCluster spills and writes worker files under the data root, not ``/tmp``. It
    serves no dashboard; the scheduler's health endpoint listens on a free loopback port
    (without ``scheduler_kwargs`` distributed binds it to port 8787 on every interface).
    Its workers start with ``WORKER_MALLOC_ENV``.
    """
    settings = settings or get_settings()
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    dask.config.set(
        {f"distributed.nanny.pre-spawn-environ.{name}": v for name, v in WORKER_MALLOC_ENV.items()}
    )
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": settings.dask_workers,
            "threads_per_worker": settings.dask_threads_per_worker,
            "processes": True,
            "dashboard_address": None,
            "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
            "local_directory": str(settings.home / "dask"),
        },
    )


def log_workers_to(config: dict[str, Any]) -> None:
    """Start LocalCluster workers from now on with this ``logging.config.dictConfig``.

    A worker process sets up its logging once, when it imports distributed, from the
    Dask config its environment holds: so the config travels as
    ``DASK_DISTRIBUTED__LOGGING`` (a dict literal, which Dask parses and hands to
    ``dictConfig``) in the nanny's pre-spawn environment. Without it a worker logs
    warnings to stderr and drops its INFO records. The scheduler and the nannies run in
    this process and follow its logging.

    Args:
        config: A dictConfig made of literals only (``repr`` must round-trip it).
    """
    dask.config.set({"distributed.nanny.pre-spawn-environ.DASK_DISTRIBUTED__LOGGING": repr(config)})
