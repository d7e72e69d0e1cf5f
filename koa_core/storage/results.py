"""Results tables (scores, quarantine, runs): Parquet schemas and atomic partition writes.

Layout under ``results_root`` (``Settings().results_dir``)::

    scores/YYYY-MM-DD/part-0.parquet         one partition per nightly batch
    quarantine/YYYY-MM-DD/part-0.parquet
    runs/YYYY-MM-DD/<run_id>.parquet         one small file per run
    deliveries/YYYY-MM-DD/part-0.parquet     DICOM results sent to the PACS, one row per
                                             instance and delivery call (appended)
    _work/                                   temp and aside dirs, lock files, and a
                                             night's commit: tx-<id>/ and its record
                                             tx-<id>.json (see ``storage.transaction``)

``batch_date`` is a date32 column inside every file and nowhere else: the partition
directories are named by the bare date, with no ``key=`` for a reader to turn into a
second, differently typed column. Measured (pandas 3.1, polars 2.1, duckdb 2.0, pyarrow
26) with ``pd.read_parquet(DIR)``, ``pl.read_parquet(DIR/**/*.parquet)`` and duckdb
``read_parquet('DIR/**/*.parquet', hive_partitioning=true)``::

    layout                          pandas                    polars      duckdb
    batch_date=D/, column in file   ArrowTypeError (merge)    Date        DATE
    batch_date=D/, no column        category of str           no column   DATE
    night=D/, column in file        date + `night` category   Date        DATE + `night`
    D/, column in file (chosen)     date                      Date        DATE

Directories named ``batch_date=D`` (koa before this layout) are renamed to ``D`` under
the table's lock by the first write or ``recover`` that touches the table; ``read_table``
reads either, since it takes ``batch_date`` from the files. ``_work`` lives beside the
datasets rather than inside them: duckdb's ``*/*.parquet`` glob and polars' directory
scan do not skip ``_``- or ``.``-prefixed directories (verified), so a leftover from a
crash inside ``scores/`` would be read as data.

Every column is documented in ``SCORES_COLUMNS``, ``QUARANTINE_COLUMNS``,
``RUNS_COLUMNS`` and ``DELIVERIES_COLUMNS`` (render them with ``columns_markdown``); the
descriptions also travel in each Parquet field's metadata.
"""

from __future__ import annotations

import ctypes
import errno
import numbers
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import filelock
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from koa_core.errors import KoaError, OutputWriteError
from koa_core.schema import PROBABILITY_COLUMNS
from koa_core.storage.files import fsync_directory


class SchemaMismatchError(KoaError, ValueError):
    """Rows or a table that do not fit a results schema; the message names the column."""


@dataclass(frozen=True)
class Column:
    """One documented column of a results table."""

    name: str
    type: pa.DataType
    nullable: bool
    description: str


SCORES = "scores"
QUARANTINE = "quarantine"
RUNS = "runs"
DELIVERIES = "deliveries"
WORK_DIR = "_work"
TX_PREFIX = "tx-"  # a multi-table commit's folder and write-ahead record in WORK_DIR
PARTITION_FILE = "part-0.parquet"
QUARANTINE_STAGES = ("read", "manifest", "localize", "model_input", "predictions")
RUN_STATUSES = ("running", "completed", "failed")
DELIVERY_KINDS = ("SR", "SC")
DELIVERY_STATUSES = ("delivered", "failed")
LOCK_TIMEOUT_S = 600.0
# How koa named partitions before they were named by the bare date.
_LEGACY_PARTITION = re.compile(r"batch_date=(\d{4}-\d{2}-\d{2})")

# 2: one row per knee (knee_side ... knee_evidence); 1 (no column): one row per image.
SCORES_SCHEMA_VERSION = 2
_UTC_US = pa.timestamp("us", tz="UTC")
_BATCH_DATE = Column("batch_date", pa.date32(), False, "Nightly batch date (also the partition).")
_RUN_ID = Column("run_id", pa.string(), False, "Id of the run that wrote the row.")

SCORES_COLUMNS: tuple[Column, ...] = (
    _BATCH_DATE,
    Column("sop_instance_uid", pa.string(), True, "(0008,0018) SOPInstanceUID; null for PNG/JPEG."),
    Column("study_instance_uid", pa.string(), True, "(0020,000D) StudyInstanceUID."),
    Column("series_instance_uid", pa.string(), True, "(0020,000E) SeriesInstanceUID."),
    Column("patient_key", pa.string(), True, "Keyed hash of (0010,0020) PatientID ('anon-...')."),
    Column("laterality", pa.string(), True, "(0020,0062) ImageLaterality 'L'/'R'; null if absent."),
    Column(
        "knee_side",
        pa.string(),
        False,
        "The patient's knee this row grades, 'R' or 'L' (with the image, the row's key).",
    ),
    Column("flipped", pa.bool_(), False, "ROI mirrored to a right knee before scoring (left)."),
    Column(
        "source_path",
        pa.string(),
        False,
        "The input's name in the batch (path under `YYYY-MM-DD/`, or `studies/…/instances/…`);"
        " components naming a patient replaced by the key; `runs/…/paths.csv` maps it to the"
        " file.",
    ),
    Column("source_sha256", pa.string(), False, "SHA-256 of the input file's bytes."),
    Column("file_format", pa.string(), False, "'dicom', 'png', 'jpeg' or 'tiff'."),
    *(
        Column(name, pa.float32(), False, f"Probability of KL grade {grade}.")
        for grade, name in enumerate(PROBABILITY_COLUMNS)
    ),
    Column("kl_grade", pa.int8(), False, "Most probable KL grade (0-4)."),
    Column("p_koa", pa.float32(), False, "Probability of radiographic OA, P(KL >= 2)."),
    Column("model_version", pa.string(), False, "Registry version of the scoring model."),
    Column("weights_sha256", pa.string(), False, "SHA-256 of the model weights file."),
    Column("preprocess_version", pa.string(), False, "Version of the file-to-input path."),
    _RUN_ID,
    Column("scored_at", _UTC_US, False, "When the image was scored (UTC)."),
    Column("input_mean", pa.float32(), False, "Mean of the preprocessed model input (drift)."),
    Column("input_std", pa.float32(), False, "Std of the preprocessed model input (drift)."),
    Column("joint_x", pa.float32(), False, "Joint centre column, in stored-image pixels."),
    Column("joint_y", pa.float32(), False, "Joint centre row, in stored-image pixels."),
    Column("roi_mm", pa.float32(), False, "Side of the square graded around the joint (mm)."),
    Column("localizer_score", pa.float32(), False, "Localizer's confidence in this knee (0-1)."),
    Column("localizer_version", pa.string(), False, "Registry version of the localizer."),
    Column(
        "knee_evidence",
        pa.string(),
        False,
        "What said knee, frontal and side: `body_part=<header|description|localizer>;"
        "view=<...>;side=<header|position|anatomy>`.",
    ),
    Column(
        "grade_set",
        pa.list_(pa.int8()),
        False,
        "Conformal prediction set of KL grades at the card's level (90 % by default).",
    ),
    Column(
        "refer",
        pa.bool_(),
        False,
        "Refer to a human reader: set of more than one grade, low localizer score, or input"
        " unlike the training data.",
    ),
    Column(
        "refer_reason",
        pa.string(),
        True,
        "';'-joined: uncertain_grade, low_localizer_score, input_out_of_range; null if not"
        " referred.",
    ),
    Column(
        "sr_sop_instance_uid",
        pa.string(),
        True,
        "SOPInstanceUID of the DICOM SR koa sends for this film (null when not delivered).",
    ),
    Column(
        "schema_version",
        pa.int8(),
        False,
        f"Version of this table's schema ({SCORES_SCHEMA_VERSION}); null in partitions written"
        " before version 2 (one row per image, no knee columns).",
    ),
)
QUARANTINE_COLUMNS: tuple[Column, ...] = (
    _BATCH_DATE,
    Column(
        "source_path",
        pa.string(),
        False,
        "The input's name in the batch, patient identifiers keyed (as in `scores`).",
    ),
    Column("source_sha256", pa.string(), True, "SHA-256 of the bytes; null if never read."),
    Column("stage", pa.string(), False, "Where it stopped: " + ", ".join(QUARANTINE_STAGES) + "."),
    Column("reasons", pa.string(), False, "Stable reason codes, ';'-joined (e.g. 'not_dicom')."),
    Column("detail", pa.string(), True, "Human-readable detail (no raw patient ids)."),
    _RUN_ID,
    Column("quarantined_at", _UTC_US, False, "When the input was quarantined (UTC)."),
)
RUNS_COLUMNS: tuple[Column, ...] = (
    _RUN_ID,
    _BATCH_DATE,
    Column("started_at", _UTC_US, False, "Run start (UTC)."),
    Column("finished_at", _UTC_US, True, "Run end (UTC); null while running."),
    Column("n_inputs", pa.int64(), False, "Files found in the batch."),
    Column("n_scored", pa.int64(), False, "Rows written to scores (knees, since schema 2)."),
    Column("n_quarantined", pa.int64(), False, "Rows written to quarantine."),
    Column(
        "model_version", pa.string(), True, "Model used; null if the run failed before loading."
    ),
    Column("status", pa.string(), False, "One of: " + ", ".join(RUN_STATUSES) + "."),
)
DELIVERIES_COLUMNS: tuple[Column, ...] = (
    _BATCH_DATE,
    Column("run_id", pa.string(), False, "Id of the run that built the instance."),
    Column("source_sop_instance_uid", pa.string(), False, "(0008,0018) of the scored film."),
    Column("study_instance_uid", pa.string(), False, "(0020,000D) of the film and the result."),
    Column("sop_instance_uid", pa.string(), False, "(0008,0018) of the SR or SC sent."),
    Column("kind", pa.string(), False, "'SR' (structured report) or 'SC' (secondary capture)."),
    Column("destination", pa.string(), False, "DICOMweb URL or outbox folder (never credentials)."),
    Column("status", pa.string(), False, "One of: " + ", ".join(DELIVERY_STATUSES) + "."),
    Column("attempts", pa.int32(), False, "Tries in this delivery call (retries included)."),
    Column("error", pa.string(), True, "The last attempt's error; null when delivered."),
    Column("delivered_at", _UTC_US, True, "When the destination accepted it (UTC); else null."),
    Column("recorded_at", _UTC_US, False, "When this outcome was recorded (UTC)."),
)
_COLUMNS = {
    SCORES: SCORES_COLUMNS,
    QUARANTINE: QUARANTINE_COLUMNS,
    RUNS: RUNS_COLUMNS,
    DELIVERIES: DELIVERIES_COLUMNS,
}
_ALLOWED: dict[str, dict[str, tuple[str, ...]]] = {
    QUARANTINE: {"stage": QUARANTINE_STAGES},
    RUNS: {"status": RUN_STATUSES},
    DELIVERIES: {"kind": DELIVERY_KINDS, "status": DELIVERY_STATUSES},
}
_SORT_KEYS: dict[str, tuple[str, ...]] = {
    SCORES: ("source_path", "knee_side"),
    QUARANTINE: ("source_path",),
    RUNS: ("started_at",),
    DELIVERIES: ("recorded_at",),
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs table."""

    run_id: str
    batch_date: date
    started_at: datetime
    finished_at: datetime | None
    n_inputs: int
    n_scored: int
    n_quarantined: int
    model_version: str | None
    status: str


def table_schema(table_name: str) -> pa.Schema:
    """The Parquet schema of ``scores``, ``quarantine`` or ``runs`` (descriptions in metadata)."""
    try:
        columns = _COLUMNS[table_name]
    except KeyError:
        raise ValueError(
            f"unknown results table {table_name!r}; expected one of {sorted(_COLUMNS)}"
        ) from None
    return pa.schema(
        pa.field(c.name, c.type, nullable=c.nullable, metadata={"description": c.description})
        for c in columns
    )


def scores_schema() -> pa.Schema:
    """The schema of the per-image scores table."""
    return table_schema(SCORES)


def columns_markdown(table_name: str) -> str:
    """A Markdown table of a results table's columns (for the README)."""
    lines = ["| column | type | nullable | description |", "|---|---|---|---|"]
    lines += [
        f"| `{c.name}` | {c.type} | {'yes' if c.nullable else 'no'} | {c.description} |"
        for c in _COLUMNS[table_name]
    ]
    return "\n".join(lines)


def build_table(table_name: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Turn dict rows into a table of the named schema, checking every value.

    Args:
        table_name: ``"scores"``, ``"quarantine"`` or ``"runs"``.
        rows: One mapping per row; missing keys are nulls.

    Returns:
        A table whose schema equals ``table_schema(table_name)``.

    Raises:
        SchemaMismatchError: An unknown key, a value of the wrong type or out of range,
            a null in a non-nullable column, or a value outside its allowed set; the
            message names the column.
    """
    schema = table_schema(table_name)
    rows = list(rows)
    unknown = set().union(*rows) - set(schema.names) if rows else set()
    if unknown:
        raise SchemaMismatchError(f"{table_name}: unknown columns {sorted(unknown)}")
    arrays = [
        _column_array(table_name, field, [row.get(field.name) for row in rows]) for field in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def build_scores_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """``build_table("scores", rows)``."""
    return build_table(SCORES, rows)


def _column_array(table_name: str, field: pa.Field, values: list[Any]) -> pa.Array:
    # pyarrow silently truncates 1.5 to 1 when building an integer array.
    if pa.types.is_integer(field.type) and any(
        v is not None and not isinstance(v, numbers.Integral) for v in values
    ):
        raise SchemaMismatchError(f"{table_name}.{field.name} ({field.type}): non-integer value")
    try:
        array = pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
        raise SchemaMismatchError(f"{table_name}.{field.name} ({field.type}): {exc}") from exc
    if not field.nullable and array.null_count:
        row = values.index(None)
        raise SchemaMismatchError(f"{table_name}.{field.name} must not be null (row {row})")
    allowed = _ALLOWED.get(table_name, {}).get(field.name, ())
    bad = sorted({v for v in values if v is not None} - set(allowed)) if allowed else []
    if bad:
        raise SchemaMismatchError(f"{table_name}.{field.name}: {bad} not in {list(allowed)}")
    return array


def write_partition(table_name: str, batch_date: date, table: pa.Table, results_root: Path) -> Path:
    """Replace one partition (``<table>/YYYY-MM-DD/``) of a results dataset atomically.

    The new partition is written and fsynced under ``results_root/_work`` (same
    filesystem), then swapped in with one ``renameat2(RENAME_EXCHANGE)`` where the
    filesystem supports it, else by renaming the old partition aside and the new one
    in. Readers never see half a batch or duplicates; after a crash the dataset holds
    either the old or the new complete partition, and the next write (or
    ``recover``) clears what is left in ``_work``.

    Args:
        table_name: ``"scores"`` or ``"quarantine"``.
        batch_date: The partition; every row's ``batch_date`` must equal it.
        table: A table from ``build_table`` (zero rows leaves an empty partition).
        results_root: ``Settings().results_dir``.

    Returns:
        The partition directory.

    Raises:
        SchemaMismatchError: ``table`` does not have the table's schema or date.
        OutputWriteError: Any ``OSError`` on the way (ENOSPC, EDQUOT, EFBIG, EACCES,
            EPERM, EROFS, ENOTDIR, a lock timeout...); nothing partial is left in the
            dataset.
    """
    if table_name == RUNS:
        raise ValueError("the runs table is written one run at a time: use append_run_summary")
    _check_table(table_name, batch_date, table)
    final = partition_dir(results_root, table_name, batch_date)
    _finish_pending_commits(results_root)
    try:
        with _locked(results_root, table_name) as work:
            _recover(results_root, table_name)
            staged = work / f"{final.name}.{uuid.uuid4().hex}.tmp"
            _write_parquet_dir(staged, table)
            _swap_into_place(staged, final)
    except OSError as exc:
        raise OutputWriteError(final, _describe(exc)) from exc
    return final


def append_partition(
    table_name: str, batch_date: date, table: pa.Table, results_root: Path
) -> Path:
    """Add rows to one partition: its old rows and ``table`` replace it in one swap.

    The read and the write happen under the table's lock, so two writers appending to
    the same night never lose each other's rows; the swap is ``write_partition``'s.

    Args:
        table_name: A partitioned table, e.g. ``"deliveries"``.
        batch_date: The partition; every row's ``batch_date`` must equal it.
        table: The new rows, from ``build_table``.
        results_root: ``Settings().results_dir``.

    Returns:
        The partition directory.

    Raises:
        SchemaMismatchError: ``table`` does not have the table's schema or date.
        OutputWriteError: Any ``OSError`` on the way; the old partition stays whole.
    """
    if table_name == RUNS:
        raise ValueError("the runs table is written one run at a time: use append_run_summary")
    _check_table(table_name, batch_date, table)
    final = partition_dir(results_root, table_name, batch_date)
    _finish_pending_commits(results_root)
    try:
        with _locked(results_root, table_name) as work:
            _recover(results_root, table_name)
            old = final / PARTITION_FILE
            if old.is_file():
                table = pa.concat_tables([pq.read_table(old, schema=table.schema), table])
            staged = work / f"{final.name}.{uuid.uuid4().hex}.tmp"
            _write_parquet_dir(staged, table)
            _swap_into_place(staged, final)
    except OSError as exc:
        raise OutputWriteError(final, _describe(exc)) from exc
    return final


def recover(results_root: Path, table_name: str) -> None:
    """Clear what a crashed write left in ``_work``, restoring an aside partition if needed.

    ``write_partition`` does this first; a flow may also call it at start so that a
    night hidden by a crash between the two fallback renames reappears before any
    reader looks. It also renames the table's ``batch_date=YYYY-MM-DD`` partitions,
    written by koa before partitions were named by the bare date, to ``YYYY-MM-DD``.

    Raises:
        OutputWriteError: The work directory could not be cleared, or a legacy partition
            could not be renamed (e.g. both ``batch_date=D`` and ``D`` hold files).
    """
    _finish_pending_commits(results_root)
    try:
        with _locked(results_root, table_name):
            _recover(results_root, table_name)
    except OSError as exc:
        raise OutputWriteError(results_root / WORK_DIR / table_name, _describe(exc)) from exc


def _recover(results_root: Path, table_name: str) -> None:
    for leftover in sorted((results_root / WORK_DIR / table_name).iterdir()):
        partition, _, kind = leftover.name.partition(".")
        final = results_root / table_name / partition
        if kind.endswith(".old") and not final.exists():
            # An aside partition is always complete: it was the live one.
            leftover.rename(final)
        elif leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    _rename_legacy_partitions(results_root / table_name)


def _rename_legacy_partitions(table_dir: Path) -> None:
    """``batch_date=YYYY-MM-DD`` -> ``YYYY-MM-DD``, one atomic rename per partition."""
    renamed = False
    for old in sorted(table_dir.glob("batch_date=*")):
        match = _LEGACY_PARTITION.fullmatch(old.name)
        if match:
            _rename_legacy(old, old.with_name(match.group(1)))
            renamed = True
    if renamed:
        fsync_directory(table_dir)


def _rename_legacy(old: Path, new: Path) -> None:
    try:
        old.rename(new)
    except OSError as exc:
        # rename() refuses a non-empty target: an older koa wrote this night again.
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise OutputWriteError(
            new, f"{old.name} beside it holds the same night (an older koa wrote it): keep one"
        ) from exc


def append_run_summary(summary: RunSummary, results_root: Path) -> Path:
    """Write (or rewrite, e.g. ``running`` -> ``completed``) one run's row atomically.

    Args:
        summary: The row; ``run_id`` must be a plain file name.
        results_root: ``Settings().results_dir``.

    Returns:
        The file ``runs/YYYY-MM-DD/<run_id>.parquet``.

    Raises:
        SchemaMismatchError: A value that does not fit the runs schema or an unsafe run id.
        OutputWriteError: The file could not be written.
    """
    table = run_table(summary)
    final = run_file(results_root, summary)
    _finish_pending_commits(results_root)
    try:
        with _locked(results_root, RUNS) as work:
            _recover(results_root, RUNS)
            staged = work / f"{final.parent.name}.{uuid.uuid4().hex}.tmp"
            _write_parquet_file(staged, table)
            final.parent.mkdir(parents=True, exist_ok=True)
            staged.replace(final)
            fsync_directory(final.parent)
    except OSError as exc:
        raise OutputWriteError(final, _describe(exc)) from exc
    return final


def run_table(summary: RunSummary) -> pa.Table:
    """One run's row as a runs table.

    Raises:
        SchemaMismatchError: A value that does not fit the runs schema or an unsafe run id.
    """
    if not _SAFE_NAME.fullmatch(summary.run_id):
        raise SchemaMismatchError(f"runs.run_id {summary.run_id!r} is not a safe file name")
    return build_table(RUNS, [asdict(summary)])


def run_file(results_root: Path, summary: RunSummary) -> Path:
    """Where one run's row lives: ``runs/YYYY-MM-DD/<run_id>.parquet``."""
    return partition_dir(results_root, RUNS, summary.batch_date) / f"{summary.run_id}.parquet"


def _finish_pending_commits(results_root: Path) -> None:
    """Roll a multi-table commit forward before this table is read or written.

    Only when a write-ahead record is present, so that reading takes no lock and writes
    nothing otherwise (e.g. on a read-only copy of the results).
    """
    if any((results_root / WORK_DIR).glob(f"{TX_PREFIX}*.json")):
        # Imported here: transaction is built on this module.
        from koa_core.storage.transaction import recover_all

        recover_all(results_root)


def read_table(table_name: str, results_root: Path, batch_date: date | None = None) -> pa.Table:
    """Read a results table (one partition or all), typed by its schema and sorted.

    ``batch_date`` comes from the files, not the folder names, so partitions in the
    legacy ``batch_date=YYYY-MM-DD`` folders read the same until a write renames them.

    Args:
        table_name: ``"scores"``, ``"quarantine"`` or ``"runs"``.
        results_root: ``Settings().results_dir``.
        batch_date: Only this partition; ``None`` reads every partition.

    Returns:
        The rows, sorted by ``batch_date`` then source path (runs: start time); an
        empty table of the right schema when nothing has been written.
    """
    schema = table_schema(table_name)
    _finish_pending_commits(results_root)
    directory = results_root / table_name
    if not directory.is_dir():
        return schema.empty_table()
    dataset = ds.dataset(directory, format="parquet", schema=schema)
    filter_ = ds.field("batch_date") == batch_date if batch_date is not None else None
    table = dataset.to_table(filter=filter_)
    if table_name == SCORES:
        table = _upgraded_scores(table)
    keys = [("batch_date", "ascending")] + [(key, "ascending") for key in _SORT_KEYS[table_name]]
    return table.sort_by(keys)


def _upgraded_scores(table: pa.Table) -> pa.Table:
    """Rows of version-1 partitions (one per image) read with ``knee_side`` = their header
    ``laterality``: the only side they were ever graded as."""
    version_1 = pc.is_null(table.column("schema_version"))
    if not pc.any(version_1).as_py():
        return table
    sides = pc.if_else(version_1, table.column("laterality"), table.column("knee_side"))
    index = table.schema.get_field_index("knee_side")
    return table.set_column(index, table.schema.field(index), sides)


def read_scores(results_root: Path, batch_date: date | None = None) -> pa.Table:
    """``read_table("scores", results_root, batch_date)``."""
    return read_table(SCORES, results_root, batch_date)


def _check_table(table_name: str, batch_date: date, table: pa.Table) -> None:
    schema = table_schema(table_name)
    if not table.schema.equals(schema):
        raise SchemaMismatchError(
            f"{table_name}: table schema differs from table_schema({table_name!r}); "
            "build it with build_table"
        )
    dates = set(table.column("batch_date").to_pylist())
    if dates - {batch_date}:
        raise SchemaMismatchError(
            f"{table_name}.batch_date: rows dated {sorted(dates)} in {batch_date}"
        )


def partition_dir(results_root: Path, table_name: str, batch_date: date) -> Path:
    """The folder of one night's partition: ``results_root/<table>/YYYY-MM-DD``."""
    return results_root / table_name / batch_date.isoformat()


@contextmanager
def _locked(results_root: Path, table_name: str) -> Iterator[Path]:
    """Hold the table's write lock; yields its work directory under ``_work``."""
    work = results_root / WORK_DIR / table_name
    work.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(work.parent / f"{table_name}.lock", timeout=LOCK_TIMEOUT_S):
        yield work


def _write_parquet_file(path: Path, table: pa.Table) -> None:
    try:
        with path.open("xb") as sink:
            pq.write_table(table, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        raise


def _write_parquet_dir(directory: Path, table: pa.Table) -> None:
    directory.mkdir()
    try:
        _write_parquet_file(directory / PARTITION_FILE, table)
        fsync_directory(directory)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _swap_into_place(staged: Path, final: Path) -> None:
    old = _swap_in(staged, final)
    if old.exists():
        shutil.rmtree(old)
    fsync_directory(final.parent)


def _swap_in(staged: Path, final: Path) -> Path:
    """Put ``staged`` at ``final``; returns where the old partition now is (maybe nowhere)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        staged.rename(final)
        return staged
    try:
        _exchange(staged, final)
        return staged
    except _ExchangeUnsupportedError:
        # Two renames leave a moment with no partition; recovery restores or finishes it
        # should the process die inside it.
        old = staged.with_name(staged.name.removesuffix(".tmp") + ".old")
        final.rename(old)
        staged.rename(final)
        return old


class _ExchangeUnsupportedError(Exception):
    """No atomic directory exchange here (not Linux glibc, or the filesystem refuses it)."""


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically with Linux ``renameat2(..., RENAME_EXCHANGE)``."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        raise _ExchangeUnsupportedError
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise _ExchangeUnsupportedError
        raise OSError(code, os.strerror(code), str(b))


def _describe(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    return f"{code}: {exc.strerror or exc}"
