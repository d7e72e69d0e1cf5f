"""The ``evaluations`` Parquet table: one row per model per evaluation, one file per evaluation.

Layout under ``Settings().results_dir``::

    evaluations/<evaluation_id>.parquet

Each evaluation's rows (champion and challenger of a retrain, or the monitored model of an
evaluate run) are written together into one new file, atomically (a hidden temporary name,
fsync, ``os.replace``), so a reader sees an evaluation whole or not at all and nothing is
ever rewritten. Read with ``read_evaluations`` or any Parquet reader
(``duckdb: read_parquet('evaluations/*.parquet')``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from koa_core.errors import OutputWriteError
from koa_core.storage.files import atomic_write_bytes
from koa_core.storage.results import Column, SchemaMismatchError

EVALUATIONS = "evaluations"
ROLES = ("champion", "challenger", "monitored")
_UTC_US = pa.timestamp("us", tz="UTC")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

EVALUATIONS_COLUMNS: tuple[Column, ...] = (
    Column("evaluation_id", pa.string(), False, "Id shared by the rows of one evaluation."),
    Column("evaluated_at", _UTC_US, False, "When the evaluation ran (UTC)."),
    Column("model_version", pa.string(), False, "Registry version evaluated."),
    Column("role", pa.string(), False, "One of: " + ", ".join(ROLES) + "."),
    Column("data_fingerprint", pa.string(), False, "sha256 of the labelled dataset's files."),
    Column("split", pa.string(), False, "Dataset split evaluated (the fixed test set: 'test')."),
    Column("n", pa.int64(), False, "Images evaluated."),
    Column("qwk", pa.float64(), True, "Quadratic weighted kappa; null when undefined."),
    Column("qwk_ci_low", pa.float64(), True, "Bootstrap 95 % interval of QWK, low end."),
    Column("qwk_ci_high", pa.float64(), True, "Bootstrap 95 % interval of QWK, high end."),
    Column("auc_koa", pa.float64(), True, "AUC-ROC of P(KL>=2); null when undefined."),
    Column("auc_koa_ci_low", pa.float64(), True, "Bootstrap 95 % interval of AUC, low end."),
    Column("auc_koa_ci_high", pa.float64(), True, "Bootstrap 95 % interval of AUC, high end."),
    Column("accuracy", pa.float64(), False, "Accuracy of the most probable grade."),
    Column("balanced_accuracy", pa.float64(), False, "Mean recall over the grades present."),
    Column("macro_f1", pa.float64(), False, "Macro F1 over grades 0-4."),
    Column("mae", pa.float64(), False, "Mean absolute grade error."),
    Column("ece", pa.float64(), False, "Expected calibration error (15 bins)."),
    Column("ece_calibrated", pa.float64(), True, "ECE after temperature scaling."),
    Column("ece_ci_low", pa.float64(), True, "Bootstrap 95 % interval of ECE, low end."),
    Column("ece_ci_high", pa.float64(), True, "Bootstrap 95 % interval of ECE, high end."),
    Column(
        "ece_calibrated_ci_low", pa.float64(), True, "Bootstrap 95 % interval, calibrated ECE, low."
    ),
    Column(
        "ece_calibrated_ci_high",
        pa.float64(),
        True,
        "Bootstrap 95 % interval, calibrated ECE, high.",
    ),
    Column("temperature", pa.float64(), True, "Temperature fitted on the validation split."),
    Column("promoted", pa.bool_(), False, "This evaluation made this model the champion."),
    Column("decision_reason", pa.string(), False, "The promotion rule's reason (or why none)."),
    Column("report_dir", pa.string(), False, "Folder with metrics.json, report.md and plots."),
    # Added with prediction sets: files written before them read back null here.
    Column("conformal_level", pa.float64(), True, "Nominal coverage of the prediction sets."),
    Column("conformal_coverage", pa.float64(), True, "Share of images whose set held the truth."),
    Column("conformal_mean_set_size", pa.float64(), True, "Mean prediction-set size (grades)."),
)


def evaluations_schema() -> pa.Schema:
    """The table's schema; each field's description travels in its metadata."""
    return pa.schema(
        pa.field(c.name, c.type, nullable=c.nullable, metadata={"description": c.description})
        for c in EVALUATIONS_COLUMNS
    )


def build_evaluations_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows as a table of ``evaluations_schema()``.

    Raises:
        SchemaMismatchError: an unknown or missing column, a wrong type, a null where none
            is allowed, or an unknown role.
    """
    schema = evaluations_schema()
    rows = list(rows)
    unknown = set().union(*rows) - set(schema.names) if rows else set()
    if unknown:
        raise SchemaMismatchError(f"{EVALUATIONS}: unknown columns {sorted(unknown)}")
    bad_roles = sorted({str(row.get("role")) for row in rows} - set(ROLES))
    if bad_roles:
        raise SchemaMismatchError(f"{EVALUATIONS}.role: {bad_roles} not in {list(ROLES)}")
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as error:
        raise SchemaMismatchError(f"{EVALUATIONS}: {error}") from error


def write_evaluation(
    evaluation_id: str, rows: Iterable[Mapping[str, Any]], results_root: Path
) -> Path:
    """Write one evaluation's rows as ``evaluations/<evaluation_id>.parquet``, atomically.

    Raises:
        SchemaMismatchError: the rows do not fit the schema, belong to another evaluation,
            or the id is not a plain file name.
        OutputWriteError: the file exists already or could not be written.
    """
    if not _SAFE_ID.fullmatch(evaluation_id):
        raise SchemaMismatchError(f"evaluation id {evaluation_id!r} is not a safe file name")
    table = build_evaluations_table(rows)
    if set(table["evaluation_id"].to_pylist()) - {evaluation_id}:
        raise SchemaMismatchError(f"{EVALUATIONS}: rows of another evaluation in {evaluation_id}")
    path = results_root / EVALUATIONS / f"{evaluation_id}.parquet"
    if path.exists():
        raise OutputWriteError(path, "an evaluation with this id was already written")
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as error:
        raise OutputWriteError(path, f"{type(error).__name__}: {error}") from error
    return path


def read_evaluations(results_root: Path) -> pa.Table:
    """Every evaluation row, oldest first (an empty table before the first evaluation)."""
    schema = evaluations_schema()
    directory = results_root / EVALUATIONS
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        return schema.empty_table()
    tables = [pq.read_table(path, schema=schema) for path in files]
    return pa.concat_tables(tables).sort_by(
        [("evaluated_at", "ascending"), ("evaluation_id", "ascending"), ("role", "ascending")]
    )
