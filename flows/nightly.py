from __future__ import annotations

import queue
import shutil
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar
from uuid import uuid4

import pandas as pd
from dask.base import annotate
from distributed import Client
from filelock import FileLock, Timeout
from prefect import flow, get_run_logger, task
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect_dask.task_runners import DaskTaskRunner

from data_checks.runner import run_suite, warm_up
from flows.redaction import redacted_logs
from flows.reporting import publish_nightly_artifacts
from flows.runners import dask_task_runner
from koa_core.config import Settings, get_settings
from koa_core.delivery.deliver import Instance, instances_dir
from koa_core.delivery.findings import Algorithm
from koa_core.delivery.ledger import DELIVERED
from koa_core.errors import BatchFailedError, KoaError
from koa_core.pipeline.chunks import chunked, ramped
from koa_core.pipeline.commit import NightSummary, commit_night
from koa_core.pipeline.deliver_night import Built, algorithm_of, deliver_night
from koa_core.pipeline.film_results import keep_film_results
from koa_core.pipeline.ledger import NightLedger, RunContext
from koa_core.pipeline.manifest import build_manifest, with_sha256
from koa_core.pipeline.prepare import LOCALIZE, READ, PreparedChunk, prepare_chunk
from koa_core.pipeline.results_warm_up import start_results_warm_up
from koa_core.pipeline.score import score_chunk
from koa_core.privacy import Redactor, site_secret
from koa_core.registry import ModelRegistry, champion_localizer
from koa_core.sources.listing import BatchListing
from koa_core.sources.pull import pull_batch
from koa_core.sources.staging import cleanup_staging, staging_dir_for
from koa_core.storage import transaction

T = TypeVar("T")
Rows = list[dict[str, Any]]
# Log records of scoring progress carry (done, total) under this key.
PROGRESS_KEY = "koa_progress"
# Images in the first chunk; chunks then double up to ``Settings.chunk_size``.
FIRST_CHUNK = 8
# Chunks submitted per worker thread ahead of the results: enough that none waits for work.
CHUNKS_PER_THREAD = 2
# Quarantined files named in the night's last log line (the artifact lists them all).
QUARANTINE_LOGGED = 5


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


@dataclass(frozen=True)
class ChunkModels:
    """What a worker needs to load the night's models: their folders, and its thread count."""

    grader_dir: str
    input_size: int
    localizer_dir: str
    threads: int
    refer_below: float
    heatmaps: bool
    tta: bool


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
def prepare(
    rows: Sealed[Rows], scratch: str, chunk_id: int, models: ChunkModels, redactor: Redactor
) -> Sealed[PreparedChunk]:
    """Decode the films of one chunk and cut their knees' ROIs (on a Dask worker)."""
    import torch

    torch.set_num_threads(models.threads)
    with redacted_logs(redactor):
        chunk = prepare_chunk(
            rows.value,
            Path(scratch),
            chunk_id,
            models.input_size,
            models.localizer_dir,
            pictures=models.heatmaps,  # the overlays are drawn on them
        )
        return Sealed(chunk)


@task
def score(prepared: Sealed[PreparedChunk], models: ChunkModels, redactor: Redactor) -> Sealed[Rows]:
    """Score one prepared chunk's knees with the grader, loaded once per worker."""
    import torch

    torch.set_num_threads(models.threads)
    chunk = prepared.value
    with redacted_logs(redactor):
        rows = score_chunk(
            chunk.array_path,
            chunk.rows,
            models.grader_dir,
            refer_below=models.refer_below,
            heatmaps=models.heatmaps,
            tta=models.tta,
        )
        return Sealed(rows)


@dataclass(frozen=True)
class ResultsPlan:
    """How the scoring workers build each film's SR and SC: whose, for which run, where."""

    algorithm: Algorithm
    run_id: str
    folder: str
    lossless_overlay: bool


@task
def keep_results(
    scored: Sealed[Rows], plan: ResultsPlan, redactor: Redactor
) -> Sealed[dict[str, Any]]:
    """Build and keep the SR and SC of one scored chunk's films (on a Dask worker)."""
    with redacted_logs(redactor):
        built = keep_film_results(
            scored.value,
            plan.algorithm,
            plan.run_id,
            Path(plan.folder),
            lossless_overlay=plan.lossless_overlay,
        )
        return Sealed(dict(built))


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
    localizer = champion_localizer()
    run = RunContext(day, _run_id(), version.version, version.weights_sha256, localizer.version)
    started = datetime.now(UTC)
    run_dir = run.log_dir(settings.runs_dir)
    transaction.recover_all(settings.results_dir)
    listing = pull(source, day, staging_dir_for(day, settings))
    logger.info(
        "batch %s: %d files, %d rejected unread", day, len(listing.files), len(listing.rejected)
    )
    ledger = NightLedger(run, listing, settings, Redactor(site_secret(settings)))
    with redacted_logs(ledger.redactor):
        models = ChunkModels(
            str(version.path),
            # The model's card, not the site's setting, fixes the input size it was trained at.
            version.model_card().input_size,
            str(localizer.path),
            settings.dask_threads_per_worker,
            settings.refer_below_localizer_score,
            heatmaps=settings.deliver_to is not None,
            tta=settings.scoring_tta,
        )
        plan = None
        if settings.deliver_to is not None:
            folder = instances_dir(settings.runs_dir, day, run.run_id)
            plan = ResultsPlan(
                algorithm_of(version, localizer),
                run.run_id,
                str(folder),
                settings.deliver_lossless_overlay,
            )
        docs_path, pending = _process(settings, ledger, listing, run_dir, models, plan)
        summary = commit_night(ledger, settings, started, docs_path)
        _report(summary, ledger)
        if settings.deliver_to is not None:
            _deliver(ledger, pending.gathered(), settings, settings.deliver_to)
    cleanup_staging(staging_dir_for(day, settings), keep=settings.keep_staged_files)
    shutil.rmtree(run_dir / "inputs", ignore_errors=True)
    if summary.failed:
        raise BatchFailedError(summary.failure)
    return summary.to_dict()


def _deliver(ledger: NightLedger, built: Built, settings: Settings, destination: str) -> None:
    """Send the committed night's SRs and SCs; failures are recorded, never raised."""
    records = deliver_night(ledger, built, settings, destination)
    failed = [record for record in records if record.status != DELIVERED]
    get_run_logger().info(
        "batch %s: %d DICOM results delivered, %d failed%s",
        ledger.run.batch_date,
        len(records) - len(failed),
        len(failed),
        " (koa deliver --batch-date D sends them again)" if failed else "",
    )


def _report(summary: NightSummary, ledger: NightLedger) -> None:
    """Log the night's outcome and publish its artifacts, all through the night's redactor."""
    quarantine = ledger.quarantine_rows()
    first = [row["source_path"] for row in quarantine[:QUARANTINE_LOGGED]]
    get_run_logger().info(
        "batch %s: %d knees scored on %d films, %d inputs quarantined (first: %s)",
        summary.batch_date,
        summary.n_scored,
        summary.n_films_scored,
        summary.n_quarantined,
        ", ".join(first) or "none",
    )
    publish_nightly_artifacts(summary, quarantine, ledger.redactor, ledger.score_rows())


def _process(
    settings: Settings,
    ledger: NightLedger,
    listing: BatchListing,
    run_dir: Path,
    models: ChunkModels,
    plan: ResultsPlan | None,
) -> tuple[Path | None, PendingResults]:
    """Check, prepare and score the night's files into ``ledger``.

    Returns:
        The Data Docs path, and the workers' builds of each DICOM film's SR and SC (when
        ``plan`` asks for them), which may still be running: the scores do not wait.
    """
    if plan is not None:
        _warm_up_workers(plan)
    files = [{"path": str(f.path), "origin": f.origin, "sha256": f.sha256} for f in listing.files]
    header_chunks = read_headers.map(list(chunked(files, 4 * settings.chunk_size)))
    manifest = [row for rows in header_chunks.result() for row in rows]
    ledger.learn_headers(manifest)
    checked = run_suite(
        pd.DataFrame(manifest),
        "manifest",
        data_docs_dir=run_dir / "data_docs",
        run_name=f"{ledger.run.batch_date}-{ledger.run.run_id}",
    )
    # Passed rows are hashed while they are decoded; refused ones are hashed here.
    ledger.quarantine(with_sha256(checked.quarantined_rows()), "manifest")
    passed = checked.passed_rows()
    chunks = list(ramped(passed, settings.chunk_size, FIRST_CHUNK, _cluster_threads()))
    scored: Rows = []
    pending = PendingResults([])
    scratch = run_dir / "inputs"
    for futures in _run_chunks(settings, chunks, scratch, models, plan):
        for stage in (READ, LOCALIZE):
            failures = futures.prepared.result().value.failures
            ledger.quarantine([row for row in failures if row["stage"] == stage], stage)
        scored += futures.scored.result().value
        if futures.results is not None:
            pending.futures.append(futures.results)
    _check_scores(ledger, scored)
    return checked.docs_path, pending


@dataclass(frozen=True)
class PendingResults:
    """The workers' builds of the night's SRs and SCs, one future per chunk.

    They are gathered only after the commit: the Parquet commit and the checks before it
    run in the flow's process while the workers, idle otherwise, still draw overlays and
    build reports (the last chunks' builds took ~3 s of a 100-film night after scoring).
    """

    futures: list[PrefectFuture[Sealed[dict[str, Any]]]]

    def gathered(self) -> Built:
        """Per DICOM film, its kept instances or why they could not be built."""
        built: dict[str, list[Instance] | str] = {}
        for future in self.futures:
            built.update(future.result().value)
        return built


def _check_scores(ledger: NightLedger, scored: Rows) -> None:
    """Run the input checks, then the prediction checks, once on the night's scored rows.

    The input checks run on the statistics every scored row carries: workers never import
    GX, and the scores of the rows that fail are dropped with them.
    """
    if not scored:
        return
    inputs = run_suite(pd.DataFrame(scored), "model_input")
    ledger.quarantine(inputs.quarantined_rows(), "model_input")
    passed = inputs.passed_rows()
    if not passed:
        return
    predictions = pd.DataFrame(passed).assign(model_version=ledger.run.model_version)
    checked = run_suite(predictions, "predictions")
    ledger.quarantine(checked.quarantined_rows(), "predictions")
    ledger.score(checked.passed_rows())


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


@dataclass(frozen=True)
class ChunkFutures:
    """One chunk's tasks: prepared, scored, and (when delivering) its films' results."""

    prepared: PrefectFuture[Sealed[PreparedChunk]]
    scored: PrefectFuture[Sealed[Rows]]
    results: PrefectFuture[Sealed[dict[str, Any]]] | None


def _run_chunks(
    settings: Settings,
    chunks: list[Rows],
    scratch: Path,
    models: ChunkModels,
    plan: ResultsPlan | None,
) -> list[ChunkFutures]:
    """Prepare then score each chunk on Dask, keeping only a few chunks ahead of the workers.

    Submitting every chunk up front cost ~0.3 s of Prefect work per chunk on the flow's
    thread before the first result could be reported (~10 s for 2,000 images), and let
    Dask prepare later chunks before it scored earlier ones. With at most
    ``CHUNKS_PER_THREAD`` per worker thread in flight, results, and progress, flow from
    the first seconds. A chunk is settled once scored (its SR and SC builds may still run);
    each settled chunk is logged with ``koa_progress``.
    """
    progress = _Progress([len(chunk) for chunk in chunks])
    in_flight_limit = CHUNKS_PER_THREAD * _cluster_threads()
    submitted: list[ChunkFutures] = []
    for index, chunk in enumerate(chunks):
        if index - progress.settled >= in_flight_limit:
            progress.wait_for_one()
        submitted.append(_submit_chunk(settings, chunk, index, scratch, models, plan))
        progress.watch(submitted[-1].scored, index)
    while progress.settled < len(chunks):
        progress.wait_for_one()
    return submitted


def _submit_chunk(
    settings: Settings,
    chunk: Rows,
    index: int,
    scratch: Path,
    models: ChunkModels,
    plan: ResultsPlan | None,
) -> ChunkFutures:
    # The chunk's own patients only: a worker compiles (and is sent) a small redactor.
    redactor = Redactor(site_secret(settings))
    redactor.learn_rows(chunk)
    prepared = prepare.submit(Sealed(chunk), str(scratch), index, models, redactor)
    # A fresh context per chunk: annotate() can be entered only once.
    with annotate(resources={"GPU": 1}) if settings.gpu_resource else nullcontext():
        # A future stands in for its result; Prefect's stubs only accept the result type.
        upstream: Any = prepared
        scored = score.submit(upstream, models, redactor)
    results = None
    if plan is not None:
        scored_rows: Any = scored
        results = keep_results.submit(scored_rows, plan, redactor)
    return ChunkFutures(prepared, scored, results)


def _dask_client() -> Client | None:
    """The flow's Dask client (its first use starts the cluster); None off Dask."""
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    return runner.client if isinstance(runner, DaskTaskRunner) else None


def _cluster_threads() -> int:
    """Worker threads of the flow's Dask cluster now (at least one)."""
    client = _dask_client()
    if client is None:
        return 1
    return max(1, sum(client.nthreads().values()))  # type: ignore[no-untyped-call]


def _warm_up_workers(plan: ResultsPlan) -> None:
    """Have each worker build a throw-away SR and SC while the flow reads the headers."""
    client = _dask_client()
    if client is not None:
        client.run(start_results_warm_up, plan.algorithm)
