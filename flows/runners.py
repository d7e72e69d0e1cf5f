"""The Dask task runner koa's flows use: an existing scheduler when configured, else local."""

from __future__ import annotations

from prefect_dask.task_runners import DaskTaskRunner

from koa_core.config import Settings, get_settings


def dask_task_runner(settings: Settings | None = None) -> DaskTaskRunner:
    """``KOA_DASK_ADDRESS`` when set, else a ``LocalCluster`` sized by the settings.

    The LocalCluster spills and writes worker files under the data root, not ``/tmp``. It
    serves no dashboard; the scheduler's health endpoint listens on a free loopback port
    (without ``scheduler_kwargs`` distributed binds it to port 8787 on every interface).
    """
    settings = settings or get_settings()
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
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
