"""Run the nightly flow from a terminal: a progress bar, full logs in a file, a prompt exit."""

from __future__ import annotations

import logging
import logging.config
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.logs import MessageOnly, logging_config
from flows.nightly import PROGRESS_KEY, nightly_scoring
from flows.runners import log_workers_to

# Longest wait for Prefect's log and event workers to deliver what they hold.
DRAIN_TIMEOUT_S = 10.0


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
        drain_prefect_workers()
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def drain_prefect_workers() -> None:
    """Deliver what Prefect's log and event workers hold, and stop them, while the API is up.

    Left to themselves they drain at interpreter exit: after a temporary server has
    stopped, the log worker then retries it for over a minute before printing
    ``--- Error logging to API ---``. Prefect's own test harness drains them the same way
    before it stops its server. A record logged in a flow run after this starts a new worker.
    """
    APILogWorker.drain_all(timeout=DRAIN_TIMEOUT_S)
    EventsWorker.drain_all(timeout=DRAIN_TIMEOUT_S)


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


def log_to_file(home: Path, command: str, console: Console) -> Path:
    """Send this run's log records to a new file under ``home/logs``; warnings to ``console``.

    Covers this process (koa, Prefect, the LocalCluster's scheduler and nannies) and the
    Dask workers it starts from now on. Prefect's console handler is replaced: its INFO
    records (flow and task states, the temporary server) go to the file only.

    Args:
        home: The data root (``Settings().home``).
        command: Names the file: ``<command>-<UTC time>.log``.
        console: Where warnings and errors are shown (above any progress bar).

    Returns:
        The log file's absolute path.
    """
    log_file = (home / "logs" / f"{command}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.log").resolve()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    config = logging_config(log_file)
    log_workers_to(config)
    config["formatters"]["message"] = {"()": MessageOnly}
    # rich prints records above the progress bar instead of through it.
    config["handlers"]["terminal"] = {
        "()": RichHandler,
        "console": console,
        "show_time": False,
        "show_path": False,
        "level": "WARNING",
        "filters": ["quiet_dask"],
        "formatter": "message",
    }
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    return log_file
