"""The ``deliveries`` table: one row per DICOM result and delivery call, appended per night."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path

from koa_core.storage import results

DELIVERED, FAILED = results.DELIVERY_STATUSES


@dataclass(frozen=True)
class DeliveryRecord:
    """The outcome of sending one SR or SC (see ``results.DELIVERIES_COLUMNS``)."""

    batch_date: date
    run_id: str
    source_sop_instance_uid: str
    study_instance_uid: str
    sop_instance_uid: str
    kind: str
    destination: str
    status: str
    attempts: int
    error: str | None
    delivered_at: datetime | None
    recorded_at: datetime


def record_deliveries(records: Sequence[DeliveryRecord], results_root: Path) -> None:
    """Append ``records`` to their nights' ``deliveries`` partitions (atomically, per night).

    Raises:
        OutputWriteError: A partition could not be written; it keeps its old rows.
    """
    for night in sorted({record.batch_date for record in records}):
        rows = [asdict(record) for record in records if record.batch_date == night]
        table = results.build_table(results.DELIVERIES, rows)
        results.append_partition(results.DELIVERIES, night, table, results_root)


def read_deliveries(results_root: Path, batch_date: date | None = None) -> list[DeliveryRecord]:
    """Every recorded outcome (of one night, or all), oldest first."""
    table = results.read_table(results.DELIVERIES, results_root, batch_date)
    return [DeliveryRecord(**row) for row in table.to_pylist()]


def latest_outcomes(records: Sequence[DeliveryRecord]) -> list[DeliveryRecord]:
    """Each instance's most recent outcome, in SOP Instance UID order.

    A re-run of a night builds the same UIDs, so its row supersedes the older run's.
    """
    latest: dict[str, DeliveryRecord] = {}
    for record in sorted(records, key=lambda r: r.recorded_at):
        latest[record.sop_instance_uid] = record
    return [latest[sop] for sop in sorted(latest)]
