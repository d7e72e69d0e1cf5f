"""The progress bar every long ``koa`` command shows on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    console: Console, *, status: bool = False, transient: bool = False, eta: bool = False
) -> Progress:
    """A bar with the task's name, count and elapsed time (and its ``status`` field).

    ``transient`` bars vanish when done, for commands whose summary follows them; ``eta``
    adds the estimated time remaining.
    """
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    if eta:
        columns.append(TimeRemainingColumn())
    if status:
        columns.append(TextColumn("{task.fields[status]}"))
    return Progress(*columns, console=console, transient=transient)
