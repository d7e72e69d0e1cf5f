"""The Dask task runner koa's flows use: an existing scheduler when configured, else local."""

from __future__ import annotations

from prefect_dask.task_runners import DaskTaskRunner

from koa_core.config import Settings, get_settings


def dask_task_runner(settings: Settings | None = None) -> DaskTaskRunner:
    """``KOA_DASK_ADDRESS`` when set, else a ``LocalCluster`` sized by the settings.

    The LocalCluster spills and writes worker files under the data root, not ``/tmp``.
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
            "local_directory": str(settings.home / "dask"),
        },
    )
