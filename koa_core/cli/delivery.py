"""The ``koa deliver`` command: re-send a night's DICOM results that failed to arrive."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from koa_core.cli.models import clear_errors

# Exit status when some results are still not delivered (a named error exits 2).
UNDELIVERED_EXIT = 1
out = Console()


def deliver_command(
    batch_date: Annotated[str, typer.Option(help="The night, YYYY-MM-DD.")],
    to: Annotated[
        str | None, typer.Option(help="DICOMweb URL or outbox folder (default: KOA_DELIVER_TO).")
    ] = None,
) -> None:
    """Re-send the night's SR and SC results whose last delivery failed (kept run files)."""
    from koa_core.delivery.deliver import redeliver_failed
    from koa_core.delivery.ledger import FAILED

    try:
        night = date.fromisoformat(batch_date)
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint="--batch-date") from None
    with clear_errors():
        records = redeliver_failed(night, to)
    if not records:
        out.print(f"{night}: nothing to re-send")
        return
    table = Table("kind", "SOP instance", "status", "attempts", "error", title=f"{night}")
    for record in records:
        table.add_row(
            record.kind,
            record.sop_instance_uid,
            record.status,
            str(record.attempts),
            record.error or "",
        )
    out.print(table)
    counts = Counter(record.status for record in records)
    out.print(", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
    if counts[FAILED]:
        raise typer.Exit(UNDELIVERED_EXIT)
