"""Run the nightly flow from a terminal, with a progress bar fed by the flow's own log records."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.nightly import PROGRESS_KEY, nightly_scoring


class _ProgressHandler(logging.Handler):
    """Advances a rich progress bar from log records that carry ``koa_progress``."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self.task = progress.add_task("scoring", total=None)

    def emit(self, record: logging.LogRecord) -> None:
        done_total = getattr(record, PROGRESS_KEY, None)
        if done_total is not None:
            done, total = done_total
            self.progress.update(self.task, completed=done, total=total)


@contextmanager
def prefect_api() -> Iterator[None]:
    """The configured Prefect API, or one temporary server shared with the Dask workers.

    Without ``PREFECT_API_URL`` every process that runs a task would start a temporary
    server of its own (the flow's LocalCluster workers included): slow, and their task runs
    would land on servers nobody reads. Workers inherit the environment set here.
    """
    if PREFECT_API_URL.value():
        yield
        return
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = SubprocessASGIServer()
    server.start(timeout=90)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def run_nightly_with_progress(
    batch_date: date, source: str | None, model: str, console: Console
) -> dict[str, Any]:
    """Run ``nightly_scoring`` in this process and show its progress on ``console``."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    logger = logging.getLogger("prefect.flow_runs")
    with prefect_api(), Progress(*columns, console=console) as progress:
        handler = _ProgressHandler(progress)
        logger.addHandler(handler)
        try:
            summary: dict[str, Any] = nightly_scoring(
                batch_date=batch_date, source=source, model=model
            )
        finally:
            logger.removeHandler(handler)
    return summary
