"""The nightly scoring flow: pull, check, preprocess and score on Dask, write Parquet."""

from __future__ import annotations

import queue
import shutil
import threading
from contextlib import nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar
from uuid import uuid4

import pandas as pd
from dask.base import annotate
from filelock import FileLock, Timeout
from prefect import flow, get_run_logger, task
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect_dask.task_runners import DaskTaskRunner

from data_checks.runner import check_batch_level, run_suite, warm_up
from flows.reporting import publish_nightly_artifacts
from flows.runners import dask_task_runner
from koa_core.config import Settings, get_settings
from koa_core.errors import BatchFailedError, KoaError
from koa_core.pipeline import ledger
from koa_core.pipeline.manifest import build_manifest, with_sha256
from koa_core.pipeline.prepare import prepare_chunk
from koa_core.pipeline.score import score_chunk
from koa_core.registry import ModelRegistry
from koa_core.sources.listing import BatchListing
from koa_core.sources.pull import pull_batch
from koa_core.sources.staging import cleanup_staging, staging_dir_for
from koa_core.storage import results

T = TypeVar("T")
Rows = list[dict[str, Any]]
# A prepared chunk: its array_path, the decoded rows and the read failures.
Prepared = dict[str, Any]
# Log records of scoring progress carry (done, total) under this key.
PROGRESS_KEY = "koa_progress"
# Images in the first chunk; chunks then double up to ``Settings.chunk_size``.
FIRST_CHUNK = 8
# Chunks submitted per worker thread ahead of the results: enough that none waits for work.
CHUNKS_PER_THREAD = 2


class ConcurrentRunError(KoaError):
    """Another run of the same batch date holds its lock."""


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=None)
def pull(source: str, batch_date: date, staging_dir: Path) -> BatchListing:
    """List (and for remote sources, stage) the night's files."""
    return pull_batch(source, batch_date, staging_dir)


@task
def read_headers(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Header-only manifest rows for a chunk of files."""
    rows = build_manifest([Path(item["path"]) for item in files], [i["sha256"] for i in files])
    return [{**row, "origin": item["origin"]} for row, item in zip(rows, files, strict=True)]


class Sealed(Generic[T]):
    """A value in a box that Prefect and Dask pass along without looking inside.

    Prefect walks every dict and list of a task's arguments and resolved inputs, looking
    for futures: ~50 ms per 64-row chunk, on the flow's one thread and again on the worker.
    (``prefect.utilities.annotations.quote`` would do, but Dask unpacks it as a tuple.)
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


@task
def prepare(rows: Sealed[Rows], scratch: str, chunk_id: int, size: int) -> Sealed[Prepared]:
    """Decode and preprocess the images of one chunk (on a Dask worker)."""
    prepared = prepare_chunk(rows.value, Path(scratch), chunk_id, size)
    return Sealed(
        {
            "array_path": prepared.array_path,
            "rows": prepared.rows,
            "read_failures": prepared.failures,
        }
    )


@task
def score(prepared: Sealed[Prepared], model_dir: str, threads: int) -> Sealed[Rows]:
    """Score one prepared chunk with the model, loaded once per worker."""
    import torch

    torch.set_num_threads(threads)
    chunk = prepared.value
    return Sealed(score_chunk(chunk["array_path"], chunk["rows"], model_dir))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with ``None`` (not NaN) for missing values, as the writers expect."""
    if frame.empty:
        return []
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{str(key): value for key, value in row.items()} for row in records]


def _run_id() -> str:
    return str(flow_run.get_id() or uuid4())


def _batch_lock(settings: Settings, batch_date: date) -> FileLock:
    path = settings.runs_dir / f"{batch_date.isoformat()}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, timeout=0)


@flow(name="nightly-scoring", task_runner=dask_task_runner())  # type: ignore[arg-type]
def nightly_scoring(
    batch_date: date | None = None, source: str | None = None, model: str = "champion"
) -> dict[str, Any]:
    """Score one night's knee radiographs; every input ends up scored or quarantined.

    Args:
        batch_date: The night to score (default: yesterday).
        source: Folder, fsspec URL or DICOMweb URL (default: ``$KOA_HOME/incoming``).
        model: Registry reference: ``champion``, ``latest`` or a version id.
    """
    settings = get_settings()
    day = batch_date or date.today() - timedelta(days=1)
    lock = _batch_lock(settings, day)
    try:
        lock.acquire()
    except Timeout as error:
        raise ConcurrentRunError(
            f"another run of batch {day} is in progress (lock {lock.lock_file}); refusing to start"
        ) from error
    try:
        return _score_night(settings, day, source or str(settings.incoming_dir), model)
    finally:
        lock.release()


def _score_night(settings: Settings, day: date, source: str, model_ref: str) -> dict[str, Any]:
    logger = get_run_logger()
    # GX takes seconds to set up: do it while the workers start and read headers.
    threading.Thread(target=warm_up, name="gx-warm-up", daemon=True).start()
    version = ModelRegistry().get(model_ref)
    run = ledger.RunContext(day, _run_id(), version.version, version.weights_sha256)
    started = datetime.now(UTC)
    run_dir = settings.runs_dir / day.isoformat() / run.run_id
    for table in (results.SCORES, results.QUARANTINE):
        results.recover(settings.results_dir, table)
    listing = pull(source, day, staging_dir_for(day, settings))
    logger.info(
        "batch %s: %d files, %d rejected unread", day, len(listing.files), len(listing.rejected)
    )
    night = _process(settings, listing, run, run_dir, str(version.path))
    summary = _write(settings, listing, run, night, started)
    publish_nightly_artifacts(summary, night["quarantine"])
    cleanup_staging(staging_dir_for(day, settings), keep=settings.keep_staged_files)
    shutil.rmtree(run_dir / "inputs", ignore_errors=True)
    if summary["status"] == "failed":
        raise BatchFailedError(summary["failure"])
    return summary


def _process(
    settings: Settings, listing: BatchListing, run: ledger.RunContext, run_dir: Path, model_dir: str
) -> dict[str, Any]:
    now = datetime.now(UTC)
    quarantine = [
        ledger.quarantine_row({"origin": r.origin}, "read", r.reason, r.detail, run, now)
        for r in listing.rejected
    ]
    files = [{"path": str(f.path), "origin": f.origin, "sha256": f.sha256} for f in listing.files]
    header_chunks = read_headers.map(list(ledger.chunked(files, 4 * settings.chunk_size)))
    manifest = [row for rows in header_chunks.result() for row in rows]
    checked = run_suite(
        pd.DataFrame(manifest),
        "manifest",
        data_docs_dir=run_dir / "data_docs",
        run_name=f"{run.batch_date}-{run.run_id}",
    )
    # Passed rows are hashed while they are decoded; refused ones are hashed here.
    refused = pd.DataFrame(with_sha256(_records(checked.quarantined)))
    quarantine += _quarantined(refused, "manifest", run)
    passed = _records(checked.passed)
    chunks = list(ledger.ramped(passed, settings.chunk_size, FIRST_CHUNK))
    scored_rows = []
    for prepared_chunk, scored_chunk in _run_chunks(
        settings, chunks, run_dir / "inputs", model_dir
    ):
        chunk, rows = prepared_chunk.result(), scored_chunk.result()
        quarantine += [_failure(row, "read", run, now) for row in chunk.value["read_failures"]]
        scored_rows += rows.value
    # The input checks run here, once, on the statistics every scored row carries: workers
    # never import GX, and the scores of the rows that fail are dropped with them.
    inputs = run_suite(pd.DataFrame(scored_rows), "model_input") if scored_rows else None
    if inputs is not None:
        quarantine += _quarantined(inputs.quarantined, "model_input", run)
    return {
        "quarantine": quarantine,
        "predictions": _records(inputs.passed) if inputs is not None else [],
        "docs_path": checked.docs_path,
        "n_inputs": len(files) + len(listing.rejected),
    }


class _Progress:
    """Counts settled chunks as their futures finish; logs ``koa_progress`` as it goes."""

    def __init__(self, chunk_sizes: list[int]) -> None:
        self._sizes = chunk_sizes
        self._total = sum(chunk_sizes)
        self._finished: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.settled = 0
        self._images = 0

    def watch(self, future: PrefectFuture[Any], index: int) -> None:
        """Count chunk ``index`` as settled once ``future`` finishes, however it ends."""
        future.add_done_callback(lambda _: self._finished.put(index))

    def wait_for_one(self) -> None:
        """Block until one more chunk settles, and log the images settled so far."""
        self._images += self._sizes[self._finished.get()]
        self.settled += 1
        done, total = self._images, self._total
        get_run_logger().info(
            "settled %d of %d images", done, total, extra={PROGRESS_KEY: (done, total)}
        )


def _run_chunks(
    settings: Settings, chunks: list[Rows], scratch: Path, model_dir: str
) -> list[tuple[PrefectFuture[Sealed[Prepared]], PrefectFuture[Sealed[Rows]]]]:
    """Prepare then score each chunk on Dask, keeping only a few chunks ahead of the workers.

    Submitting every chunk up front cost ~0.3 s of Prefect work per chunk on the flow's
    thread before the first result could be reported (~10 s for 2,000 images), and let
    Dask prepare later chunks before it scored earlier ones. With at most
    ``CHUNKS_PER_THREAD`` per worker thread in flight, results, and progress, flow from
    the first seconds. Each settled chunk is logged with ``koa_progress``.
    """
    progress = _Progress([len(chunk) for chunk in chunks])
    in_flight_limit = CHUNKS_PER_THREAD * _cluster_threads()
    pairs: list[tuple[PrefectFuture[Sealed[Prepared]], PrefectFuture[Sealed[Rows]]]] = []
    for index, chunk in enumerate(chunks):
        if index - progress.settled >= in_flight_limit:
            progress.wait_for_one()
        pairs.append(_submit_chunk(settings, chunk, index, scratch, model_dir))
        progress.watch(pairs[-1][1], index)
    while progress.settled < len(chunks):
        progress.wait_for_one()
    return pairs


def _submit_chunk(
    settings: Settings, chunk: Rows, index: int, scratch: Path, model_dir: str
) -> tuple[PrefectFuture[Sealed[Prepared]], PrefectFuture[Sealed[Rows]]]:
    prepared = prepare.submit(Sealed(chunk), str(scratch), index, settings.input_size)
    # A fresh context per chunk: annotate() can be entered only once.
    with annotate(resources={"GPU": 1}) if settings.gpu_resource else nullcontext():
        # A future stands in for its result; Prefect's stubs only accept the result type.
        upstream: Any = prepared
        scored = score.submit(upstream, model_dir, settings.dask_threads_per_worker)
    return prepared, scored


def _cluster_threads() -> int:
    """Worker threads of the flow's Dask cluster now (at least one)."""
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if not isinstance(runner, DaskTaskRunner):
        return 1
    return max(1, sum(runner.client.nthreads().values()))  # type: ignore[no-untyped-call]


def _failure(
    row: dict[str, Any], stage: str, run: ledger.RunContext, at: datetime
) -> dict[str, Any]:
    return ledger.quarantine_row(row, stage, row["reasons"], row.get("detail"), run, at)


def _quarantined(frame: pd.DataFrame, stage: str, run: ledger.RunContext) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        ledger.quarantine_row(row, stage, row["reasons"], row.get("read_error_detail"), run, now)
        for row in _records(frame)
    ]


def _write(
    settings: Settings,
    listing: BatchListing,
    run: ledger.RunContext,
    night: dict[str, Any],
    started: datetime,
) -> dict[str, Any]:
    quarantine = night["quarantine"]
    predictions = pd.DataFrame(night["predictions"]).assign(model_version=run.model_version)
    checked = run_suite(predictions, "predictions") if night["predictions"] else None
    now = datetime.now(UTC)
    scores = [
        ledger.score_row(row, run, settings, now)
        for row in (_records(checked.passed) if checked else [])
    ]
    if checked is not None:
        quarantine += _quarantined(checked.quarantined, "predictions", run)
    origins = [f.origin for f in listing.files] + [r.origin for r in listing.rejected]
    ledger.account(origins, scores, quarantine)
    results.write_partition(
        results.SCORES, run.batch_date, results.build_scores_table(scores), settings.results_dir
    )
    results.write_partition(
        results.QUARANTINE,
        run.batch_date,
        results.build_table(results.QUARANTINE, quarantine),
        settings.results_dir,
    )
    failure = _batch_failure(night["n_inputs"], len(quarantine), settings)
    status = "failed" if failure else "completed"
    results.append_run_summary(
        results.RunSummary(
            run.run_id,
            run.batch_date,
            started,
            datetime.now(UTC),
            night["n_inputs"],
            len(scores),
            len(quarantine),
            run.model_version,
            status,
        ),
        settings.results_dir,
    )
    return {
        "batch_date": run.batch_date.isoformat(),
        "run_id": run.run_id,
        "model_version": run.model_version,
        "n_inputs": night["n_inputs"],
        "n_scored": len(scores),
        "n_quarantined": len(quarantine),
        "grades": ledger.grade_distribution(scores),
        "p_koa": [s["p_koa"] for s in scores],
        "results_dir": str(settings.results_dir),
        "docs_path": str(night["docs_path"] or ""),
        "status": status,
        "failure": failure,
    }


def _batch_failure(n_inputs: int, n_quarantined: int, settings: Settings) -> str | None:
    try:
        check_batch_level(n_inputs, n_quarantined, settings.max_quarantine_share)
    except BatchFailedError as error:
        return str(error)
    return None
