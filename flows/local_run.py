"""Run the nightly flow from a terminal, with a progress bar fed by the flow's own log records."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

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
    with Progress(*columns, console=console) as progress:
        handler = _ProgressHandler(progress)
        logger.addHandler(handler)
        try:
            summary: dict[str, Any] = nightly_scoring(
                batch_date=batch_date, source=source, model=model
            )
        finally:
            logger.removeHandler(handler)
    return summary
