"""A night's DICOM results: build, keep in the run folder, send with retries, record.

Every SR and SC is written to ``<runs_dir>/YYYY-MM-DD/<run id>/deliveries/<sop>.dcm``
before it is sent, and ``redeliver_failed`` re-sends those bytes rather than rebuilding:
rebuilding would need the film's header, the overlay picture and the model's outputs
again, which the Parquet tables do not hold (and staged films are deleted after a run),
and the kept file is exactly what the first try sent, same UIDs, same content.

Only transient failures are retried, with exponential backoff. After one instance has
used up its retries on transient errors the destination counts as down: the night's
remaining instances are recorded as failed with zero attempts instead of each waiting
out its own timeouts, and ``koa deliver`` sends them later. A failed delivery only adds
rows to ``deliveries``; scores are never touched.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from koa_core.config import Settings, get_settings
from koa_core.delivery import uids
from koa_core.delivery.capture import build_capture
from koa_core.delivery.destinations import Destination, open_destination
from koa_core.delivery.findings import FilmFindings
from koa_core.delivery.ledger import (
    DELIVERED,
    FAILED,
    DeliveryRecord,
    latest_outcomes,
    read_deliveries,
    record_deliveries,
)
from koa_core.delivery.report import build_report
from koa_core.errors import DeliveryError, OutputWriteError, TransientDeliveryError
from koa_core.storage.files import atomic_write_bytes

DELIVERIES_DIR = "deliveries"
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Instance:
    """One built result waiting to be sent: the dataset and its Part 10 bytes."""

    kind: str
    run_id: str
    source_sop_instance_uid: str
    dataset: Dataset
    data: bytes

    @classmethod
    def of(cls, kind: str, run_id: str, source: str, dataset: Dataset) -> Instance:
        """Encode ``dataset`` once: the kept file and an outbox get the same bytes."""
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
        return cls(kind, run_id, source, dataset, buffer.getvalue())


@dataclass(frozen=True)
class _Outcome:
    status: str
    attempts: int
    error: str | None
    delivered_at: datetime | None
    gave_up: bool = False  # every try failed transiently: the destination looks down


def instances_dir(runs_dir: Path, batch_date: date, run_id: str) -> Path:
    """Where a run keeps the SR and SC it built: ``<runs_dir>/YYYY-MM-DD/<run>/deliveries``."""
    return runs_dir / batch_date.isoformat() / run_id / DELIVERIES_DIR


def build_instances(film: FilmFindings, run_id: str) -> list[Instance]:
    """The SR and the SC of one film.

    Raises:
        ResultBuildError: Findings or a header that cannot be written as DICOM.
    """
    source = str(film.source.SOPInstanceUID)
    return [
        Instance.of(uids.SR, run_id, source, build_report(film)),
        Instance.of(uids.SC, run_id, source, build_capture(film)),
    ]


def deliver_findings(
    findings: Sequence[FilmFindings],
    destination: str,
    *,
    batch_date: date,
    run_id: str,
    settings: Settings | None = None,
    sleep: Sleep = time.sleep,
) -> list[DeliveryRecord]:
    """Build every film's SR and SC, keep them in the run folder, send them, record it all.

    Args:
        findings: The night's scored films.
        destination: A DICOMweb URL (STOW-RS) or an outbox folder (``KOA_DELIVER_TO``).
        batch_date: The night.
        run_id: The run that scored it (names the folder the instances are kept in).
        settings: Supplies ``runs_dir``, ``results_dir`` and the retry settings.
        sleep: Waits between retries (tests pass a recorder).

    Returns:
        One record per instance, in the order sent (SR then SC per film).

    Raises:
        ResultBuildError: A film whose results cannot be built; nothing was sent.
        OutputWriteError: An instance or the ``deliveries`` table could not be written.
    """
    settings = settings or get_settings()
    instances = [item for film in findings for item in build_instances(film, run_id)]
    folder = instances_dir(settings.runs_dir, batch_date, run_id)
    for instance in instances:
        _keep(folder / f"{instance.dataset.SOPInstanceUID}.dcm", instance.data)
    return _send_all(instances, open_destination(destination), batch_date, settings, sleep)


def redeliver_failed(
    batch_date: date,
    destination: str | None = None,
    *,
    settings: Settings | None = None,
    sleep: Sleep = time.sleep,
) -> list[DeliveryRecord]:
    """Re-send the night's instances whose latest outcome is ``failed``, from the kept files.

    Args:
        batch_date: The night.
        destination: Where to; default ``KOA_DELIVER_TO``.
        settings: As for ``deliver_findings``.
        sleep: As for ``deliver_findings``.

    Returns:
        The new records (empty when nothing had failed). A kept file that has gone is
        recorded as failed with zero attempts: that night must be scored again.

    Raises:
        DeliveryError: No destination given and ``KOA_DELIVER_TO`` unset.
        OutputWriteError: The ``deliveries`` table could not be written.
    """
    settings = settings or get_settings()
    target = destination or settings.deliver_to
    if not target:
        raise DeliveryError("no destination: pass one or set KOA_DELIVER_TO")
    opened = open_destination(target)
    failed = [
        record
        for record in latest_outcomes(read_deliveries(settings.results_dir, batch_date))
        if record.status == FAILED
    ]
    instances, missing = [], []
    for record in failed:
        kept = instances_dir(settings.runs_dir, batch_date, record.run_id)
        path = kept / f"{record.sop_instance_uid}.dcm"
        try:
            data = path.read_bytes()
            dataset = pydicom.dcmread(io.BytesIO(data))
        except (OSError, InvalidDicomError) as exc:
            missing.append(_missing(record, opened.label, f"kept instance unreadable: {exc}"))
            continue
        source = record.source_sop_instance_uid
        instances.append(Instance(record.kind, record.run_id, source, dataset, data))
    sent = _send_all(instances, opened, batch_date, settings, sleep)
    record_deliveries(missing, settings.results_dir)
    return sent + missing


def _keep(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise OutputWriteError(path, str(exc)) from exc


def _send_all(
    instances: Sequence[Instance],
    destination: Destination,
    batch_date: date,
    settings: Settings,
    sleep: Sleep,
) -> list[DeliveryRecord]:
    records: list[DeliveryRecord] = []
    down: str | None = None  # set once the destination has used up one instance's retries
    for instance in instances:
        if down is None:
            outcome = _send_one(destination, instance, settings, sleep)
            if outcome.gave_up:
                down = f"not attempted: {destination.label} unreachable ({outcome.error})"
        else:
            outcome = _Outcome(FAILED, 0, down, None)
        records.append(_record(instance, destination.label, batch_date, outcome))
    record_deliveries(records, settings.results_dir)
    return records


def _send_one(
    destination: Destination, instance: Instance, settings: Settings, sleep: Sleep
) -> _Outcome:
    """Up to ``1 + deliver_retries`` tries; only ``TransientDeliveryError`` is retried."""
    error = ""
    for attempt in range(1, settings.deliver_retries + 2):
        try:
            destination.send(instance.dataset, instance.data)
        except TransientDeliveryError as exc:
            error = str(exc)
            if attempt <= settings.deliver_retries:
                sleep(settings.deliver_backoff_s * 2 ** (attempt - 1))
            continue
        except DeliveryError as exc:
            return _Outcome(FAILED, attempt, str(exc), None)
        return _Outcome(DELIVERED, attempt, None, datetime.now(UTC))
    return _Outcome(FAILED, settings.deliver_retries + 1, error, None, gave_up=True)


def _record(
    instance: Instance, destination: str, batch_date: date, outcome: _Outcome
) -> DeliveryRecord:
    return DeliveryRecord(
        batch_date=batch_date,
        run_id=instance.run_id,
        source_sop_instance_uid=instance.source_sop_instance_uid,
        study_instance_uid=str(instance.dataset.StudyInstanceUID),
        sop_instance_uid=str(instance.dataset.SOPInstanceUID),
        kind=instance.kind,
        destination=destination,
        status=outcome.status,
        attempts=outcome.attempts,
        error=outcome.error,
        delivered_at=outcome.delivered_at,
        recorded_at=datetime.now(UTC),
    )


def _missing(record: DeliveryRecord, destination: str, error: str) -> DeliveryRecord:
    return replace(
        record,
        destination=destination,
        attempts=0,
        error=error,
        delivered_at=None,
        recorded_at=datetime.now(UTC),
    )
