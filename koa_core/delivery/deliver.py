"""A night's DICOM results: build, keep in the run folder, send with retries, record.

Every SR and SC is written to ``<runs_dir>/YYYY-MM-DD/<run id>/deliveries/<sop>.dcm``
before it is sent, and ``redeliver_failed`` re-sends those bytes rather than rebuilding:
rebuilding would need the film's header, the overlay picture and the model's outputs
again, which the Parquet tables do not hold (and staged films are deleted after a run),
and the kept file is exactly what the first try sent, same UIDs, same content.

Instances are sent ``deliver_concurrency`` at a time (a STOW-RS round trip, or an outbox
file's fsync, is mostly waiting). Only transient failures are retried, with exponential
backoff. After one instance has used up its retries on transient errors the destination
counts as down: the instances not yet started are recorded as failed with zero attempts
instead of each waiting out its own timeouts, and ``koa deliver`` sends them later. A
failed delivery only adds rows to ``deliveries``; scores are never touched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from koa_core.config import Settings, get_settings
from koa_core.delivery import uids
from koa_core.delivery.capture import build_capture
from koa_core.delivery.destinations import Destination, open_destination
from koa_core.delivery.encoding import part10_bytes
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
    """One built result, kept in its run's folder until it is sent (and after)."""

    kind: str
    run_id: str
    source_sop_instance_uid: str
    study_instance_uid: str
    sop_instance_uid: str
    path: Path


@dataclass(frozen=True)
class _Outcome:
    status: str
    attempts: int
    error: str | None
    delivered_at: datetime | None = None
    gave_up: bool = False  # every try failed transiently: the destination looks down


def instances_dir(runs_dir: Path, batch_date: date, run_id: str) -> Path:
    """Where a run keeps the SR and SC it built: ``<runs_dir>/YYYY-MM-DD/<run>/deliveries``."""
    return runs_dir / batch_date.isoformat() / run_id / DELIVERIES_DIR


def keep_instances(
    film: FilmFindings, run_id: str, folder: Path, *, lossless_overlay: bool = False
) -> list[Instance]:
    """Build the SR and the SC of one film and keep their Part 10 files in ``folder``.

    ``lossless_overlay`` keeps the SC uncompressed (``build_capture``).

    Raises:
        ResultBuildError: Findings or a header that cannot be written as DICOM.
        OutputWriteError: A kept file could not be written.
    """
    source = str(film.source.SOPInstanceUID)
    kept = []
    capture = build_capture(film, lossless=lossless_overlay)
    for kind, dataset in ((uids.SR, build_report(film)), (uids.SC, capture)):
        sop = str(dataset.SOPInstanceUID)
        path = folder / f"{sop}.dcm"
        _keep(path, part10_bytes(dataset))
        kept.append(Instance(kind, run_id, source, str(dataset.StudyInstanceUID), sop, path))
    return kept


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
    folder = instances_dir(settings.runs_dir, batch_date, run_id)
    lossless = settings.deliver_lossless_overlay
    kept = [
        item
        for film in findings
        for item in keep_instances(film, run_id, folder, lossless_overlay=lossless)
    ]
    return send_instances(kept, destination, batch_date, settings, sleep)


def send_instances(
    instances: Sequence[Instance],
    destination: str,
    batch_date: date,
    settings: Settings,
    sleep: Sleep = time.sleep,
) -> list[DeliveryRecord]:
    """Send kept instances and record every outcome in ``deliveries``.

    A kept file that cannot be read is recorded as failed with zero attempts: that night
    must be scored again.

    Raises:
        OutputWriteError: The ``deliveries`` table could not be written.
    """
    label = open_destination(destination).label
    sender = _Sender(destination, settings, sleep)
    with ThreadPoolExecutor(settings.deliver_concurrency, "koa-deliver") as pool:
        outcomes = list(pool.map(sender.outcome, instances))
    records = [
        _record(instance, label, batch_date, outcome)
        for instance, outcome in zip(instances, outcomes, strict=True)
    ]
    record_deliveries(records, settings.results_dir)
    return records


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
    failed = [
        record
        for record in latest_outcomes(read_deliveries(settings.results_dir, batch_date))
        if record.status == FAILED
    ]
    instances = [
        Instance(
            record.kind,
            record.run_id,
            record.source_sop_instance_uid,
            record.study_instance_uid,
            record.sop_instance_uid,
            instances_dir(settings.runs_dir, batch_date, record.run_id)
            / f"{record.sop_instance_uid}.dcm",
        )
        for record in failed
    ]
    return send_instances(instances, target, batch_date, settings, sleep)


@dataclass(frozen=True)
class Unbuilt:
    """A scored film whose SR and SC could not be built, and why."""

    run_id: str
    source_sop_instance_uid: str
    study_instance_uid: str
    model_version: str
    error: str


def record_unbuilt(
    films: Sequence[Unbuilt], destination: str, batch_date: date, settings: Settings
) -> list[DeliveryRecord]:
    """Record the SR and SC of each film in ``films`` as failed with zero attempts, under
    the UIDs they would have had, so that ``deliveries`` shows every scored film."""
    label = open_destination(destination).label
    now = datetime.now(UTC)
    records = [
        DeliveryRecord(
            batch_date=batch_date,
            run_id=film.run_id,
            source_sop_instance_uid=film.source_sop_instance_uid,
            study_instance_uid=film.study_instance_uid,
            sop_instance_uid=str(
                uids.instance_uid(kind, film.source_sop_instance_uid, film.model_version)
            ),
            kind=kind,
            destination=label,
            status=FAILED,
            attempts=0,
            error=f"not built: {film.error}",
            delivered_at=None,
            recorded_at=now,
        )
        for film in films
        for kind in (uids.SR, uids.SC)
    ]
    record_deliveries(records, settings.results_dir)
    return records


def _keep(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise OutputWriteError(path, str(exc)) from exc


class _Sender:
    """Sends instances from several threads, each with its own connection to ``destination``.

    After one instance has used up its retries on transient errors, the instances not yet
    started are failed unsent (``down``); those already in flight finish their tries. With
    one thread that is exactly "the first instance to give up stops the night's sending".
    """

    def __init__(self, destination: str, settings: Settings, sleep: Sleep) -> None:
        self._destination, self._settings, self._sleep = destination, settings, sleep
        self._local = threading.local()
        self._down: str | None = None

    def outcome(self, instance: Instance) -> _Outcome:
        """Read ``instance``'s kept file and send it, unless the destination is down."""
        try:
            data = instance.path.read_bytes()
        except OSError as exc:
            return _Outcome(FAILED, 0, f"kept instance unreadable: {exc}")
        if self._down is not None:
            return _Outcome(FAILED, 0, self._down)
        destination = self._opened()
        outcome = _send_one(destination, instance, data, self._settings, self._sleep)
        if outcome.gave_up and self._down is None:
            self._down = f"not attempted: {destination.label} unreachable ({outcome.error})"
        return outcome

    def _opened(self) -> Destination:
        # A requests session per thread: sessions are not documented as thread-safe.
        if not hasattr(self._local, "destination"):
            self._local.destination = open_destination(self._destination)
        opened: Destination = self._local.destination
        return opened


def _send_one(
    destination: Destination, instance: Instance, data: bytes, settings: Settings, sleep: Sleep
) -> _Outcome:
    """Up to ``1 + deliver_retries`` tries; only ``TransientDeliveryError`` is retried."""
    error = ""
    for attempt in range(1, settings.deliver_retries + 2):
        try:
            destination.send(instance.study_instance_uid, instance.sop_instance_uid, data)
        except TransientDeliveryError as exc:
            error = str(exc)
            if attempt <= settings.deliver_retries:
                sleep(settings.deliver_backoff_s * 2 ** (attempt - 1))
            continue
        except DeliveryError as exc:
            return _Outcome(FAILED, attempt, str(exc))
        return _Outcome(DELIVERED, attempt, None, datetime.now(UTC))
    return _Outcome(FAILED, settings.deliver_retries + 1, error, gave_up=True)


def _record(
    instance: Instance, destination: str, batch_date: date, outcome: _Outcome
) -> DeliveryRecord:
    return DeliveryRecord(
        batch_date=batch_date,
        run_id=instance.run_id,
        source_sop_instance_uid=instance.source_sop_instance_uid,
        study_instance_uid=instance.study_instance_uid,
        sop_instance_uid=instance.sop_instance_uid,
        kind=instance.kind,
        destination=destination,
        status=outcome.status,
        attempts=outcome.attempts,
        error=outcome.error,
        delivered_at=outcome.delivered_at,
        recorded_at=datetime.now(UTC),
    )
