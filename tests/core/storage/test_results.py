"""Tests for the results tables: schemas, atomic partition replacement, readers, write errors."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from koa_core.errors import OutputWriteError
from koa_core.storage import results
from koa_core.storage.evaluations import EVALUATIONS, evaluations_schema, write_evaluation
from koa_core.storage.results import (
    QUARANTINE,
    SCORES,
    RunSummary,
    SchemaMismatchError,
    append_run_summary,
    build_scores_table,
    build_table,
    read_scores,
    read_table,
    write_partition,
)
from tests.knee_columns import scores_knee

DAY1 = date(2024, 3, 1)
DAY2 = date(2024, 3, 2)


def score_rows(batch_date: date, n: int, seed: int = 0, tag: str = "a") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        probs = rng.dirichlet(np.ones(5)).astype(np.float32)
        rows.append(
            {
                "batch_date": batch_date,
                "sop_instance_uid": f"1.2.3.{seed}.{i}",
                "study_instance_uid": "1.2.3",
                "series_instance_uid": "1.2.3.4",
                "patient_key": f"anon-{i:032x}",
                "laterality": "L" if i % 2 else None,
                "flipped": bool(i % 2),
                "source_path": f"/incoming/{batch_date}/{tag}{i:04d}.dcm",
                "source_sha256": f"{i:064x}",
                "file_format": "dicom",
                **{f"p_kl{g}": float(probs[g]) for g in range(5)},
                "kl_grade": int(np.argmax(probs)),
                "p_koa": float(probs[2:].sum()),
                "model_version": "v1",
                "weights_sha256": "f" * 64,
                "preprocess_version": "1",
                "run_id": f"run-{tag}",
                "scored_at": datetime(2024, 3, 2, 1, 2, 3, 456789, tzinfo=UTC),
                "input_mean": float(rng.random()),
                "input_std": float(rng.random()),
                **scores_knee("L" if i % 2 else "R"),
            }
        )
    return rows


def write_scores(root: Path, batch_date: date, n: int, tag: str) -> Path:
    return write_partition(
        SCORES, batch_date, build_scores_table(score_rows(batch_date, n, tag=tag)), root
    )


def work_leftovers(root: Path) -> list[str]:
    """What is left in the per-table work dirs (lock files sit one level up)."""
    work = root / results.WORK_DIR
    return sorted(str(p.relative_to(work)) for p in work.glob("*/*"))


def read_all_ways(root: Path) -> dict[str, list[str]]:
    """source_path per reader: koa, pyarrow dataset, pandas, duckdb and polars globs."""
    scores = root / SCORES
    dataset = ds.dataset(scores, format="parquet", schema=results.scores_schema())
    duck = duckdb.execute(
        f"SELECT source_path FROM read_parquet('{scores}/**/*.parquet', hive_partitioning=true) "
        "ORDER BY 1"
    ).fetchall()
    return {
        "koa": read_scores(root).column("source_path").to_pylist(),
        "pyarrow": sorted(dataset.to_table().column("source_path").to_pylist()),
        "pandas": sorted(pd.read_parquet(scores)["source_path"]),
        "duckdb": [r[0] for r in duck],
        "polars": sorted(pl.read_parquet(scores / "**/*.parquet")["source_path"].to_list()),
    }


def test_schema_columns_are_documented() -> None:
    schema = results.scores_schema()
    markdown = results.columns_markdown(SCORES)
    for field in schema:
        assert field.metadata[b"description"]
        assert f"`{field.name}`" in markdown
    expected_probs = {f"p_kl{g}" for g in range(5)} | {"p_koa"}
    assert expected_probs <= set(schema.names)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("kl_grade", 300),
        ("kl_grade", 1.5),
        ("p_kl0", "high"),
        ("source_sha256", None),
        ("scored_at", "yesterday"),
        ("flipped", 1.0),
        ("batch_date", None),
        ("p_kl5", 0.1),
    ],
)
def test_build_rejects_rows_that_do_not_fit_and_names_the_column(
    column: str, value: object
) -> None:
    rows = score_rows(DAY1, 3)
    rows[1][column] = value
    with pytest.raises(SchemaMismatchError, match=column):
        build_scores_table(rows)


def test_quarantine_stage_must_be_known() -> None:
    row = {
        "batch_date": DAY1,
        "source_path": "/x.dcm",
        "stage": "scoring",
        "reasons": "not_dicom",
        "run_id": "r",
        "quarantined_at": datetime.now(UTC),
    }
    with pytest.raises(SchemaMismatchError, match="stage"):
        build_table(QUARANTINE, [row])
    row["stage"] = "read"
    assert build_table(QUARANTINE, [row]).num_rows == 1


def test_round_trip_types_in_every_reader(tmp_path: Path) -> None:
    rows = score_rows(DAY1, 4, tag="x") + score_rows(DAY2, 3, tag="y")[:3]
    write_partition(SCORES, DAY1, build_scores_table(rows[:4]), tmp_path)
    write_partition(SCORES, DAY2, build_scores_table(rows[4:]), tmp_path)

    table = read_scores(tmp_path)
    assert table.schema.equals(results.scores_schema())
    assert table.column("batch_date").to_pylist() == [DAY1] * 4 + [DAY2] * 3
    np.testing.assert_array_equal(
        table.column("p_kl3").to_numpy(), np.array([r["p_kl3"] for r in rows], dtype=np.float32)
    )
    assert table.column("scored_at").to_pylist()[0] == rows[0]["scored_at"]
    assert read_scores(tmp_path, DAY2).num_rows == 3

    duck = duckdb.execute(
        f"SELECT typeof(batch_date), typeof(p_kl0), typeof(kl_grade), typeof(scored_at), count(*) "
        f"FROM read_parquet('{tmp_path / SCORES}/**/*.parquet', hive_partitioning=true) "
        "GROUP BY ALL"
    ).fetchall()
    assert duck == [("DATE", "FLOAT", "TINYINT", "TIMESTAMP WITH TIME ZONE", 7)]

    frame = pl.read_parquet(tmp_path / SCORES / "**/*.parquet")
    assert frame.schema["batch_date"] == pl.Date
    assert frame.schema["p_koa"] == pl.Float32
    assert frame.schema["kl_grade"] == pl.Int8
    assert frame.schema["scored_at"] == pl.Datetime("us", "UTC")
    assert frame.height == 7


def test_replacing_a_partition_leaves_no_duplicates(tmp_path: Path) -> None:
    write_scores(tmp_path, DAY1, 5, tag="old")
    write_scores(tmp_path, DAY2, 2, tag="other")
    write_scores(tmp_path, DAY1, 3, tag="new")

    for reader, paths in read_all_ways(tmp_path).items():
        assert len(paths) == 5, reader
        assert sum("/new" in p for p in paths) == 3, reader
        assert not any("/old" in p for p in paths), reader
    assert work_leftovers(tmp_path) == []


def test_replacement_without_atomic_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(a: Path, b: Path) -> None:
        raise results._ExchangeUnsupportedError

    monkeypatch.setattr(results, "_exchange", unsupported)
    write_scores(tmp_path, DAY1, 4, tag="old")
    write_scores(tmp_path, DAY1, 2, tag="new")
    assert all(len(p) == 2 for p in read_all_ways(tmp_path).values())
    assert work_leftovers(tmp_path) == []


class Crash(BaseException):
    """A process dying mid-write: nothing in results catches it."""


def crash_writing_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(path: Path, table: pa.Table) -> None:
        path.write_bytes(b"PAR1 half a file")
        raise Crash

    monkeypatch.setattr(results, "_write_parquet_file", half_written)


def crash_before_swap(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(a: Path, b: Path) -> None:
        raise Crash

    monkeypatch.setattr(results, "_exchange", crash)


def crash_after_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(path: Path, *args: object, **kwargs: object) -> None:
        raise Crash

    monkeypatch.setattr(shutil, "rmtree", crash)


def crash_between_fallback_renames(monkeypatch: pytest.MonkeyPatch) -> None:
    crash_after_first_rename(monkeypatch)

    def unsupported(a: Path, b: Path) -> None:
        raise results._ExchangeUnsupportedError

    monkeypatch.setattr(results, "_exchange", unsupported)


def crash_after_first_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    real_rename = Path.rename
    calls: list[Path] = []

    def rename_then_crash(self: Path, target: Any) -> Path:
        calls.append(self)
        if len(calls) > 1:
            raise Crash
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_then_crash)


@pytest.mark.parametrize(
    "inject",
    [crash_writing_file, crash_before_swap, crash_after_exchange, crash_between_fallback_renames],
)
def test_crash_mid_write_leaves_one_complete_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inject: Callable[[pytest.MonkeyPatch], None]
) -> None:
    write_scores(tmp_path, DAY1, 4, tag="old")
    with monkeypatch.context() as patch:
        inject(patch)
        with pytest.raises(Crash):
            write_scores(tmp_path, DAY1, 2, tag="new")
    assert work_leftovers(tmp_path), "the crash should leave something behind in _work"

    # A crash between the fallback's two renames hides the night until recovery.
    results.recover(tmp_path, SCORES)
    for reader, paths in read_all_ways(tmp_path).items():
        tags = {"old" if "/old" in p else "new" for p in paths}
        assert (len(paths), tags) in ((4, {"old"}), (2, {"new"})), reader
    assert work_leftovers(tmp_path) == []

    write_scores(tmp_path, DAY1, 3, tag="next")
    assert all(len(p) == 3 for p in read_all_ways(tmp_path).values())
    assert work_leftovers(tmp_path) == []


def test_crash_leftovers_are_invisible_before_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_scores(tmp_path, DAY1, 4, tag="old")
    with monkeypatch.context() as patch:
        crash_after_exchange(patch)
        with pytest.raises(Crash):
            write_scores(tmp_path, DAY1, 2, tag="new")
    # The old partition now sits in _work as a full, valid Parquet file: no reader may see it.
    for reader, paths in read_all_ways(tmp_path).items():
        assert len(paths) == 2, reader


_WRITE_PAST_LIMIT = """
import sys
from pathlib import Path
from koa_core.errors import OutputWriteError
from koa_core.storage.results import SCORES, build_scores_table, write_partition
from tests.core.storage.test_results import DAY1, score_rows
try:
    write_partition(SCORES, DAY1, build_scores_table(score_rows(DAY1, 2000, tag="new")),
                    Path(sys.argv[1]))
except OutputWriteError as error:
    print(error.path)
    print(error)
    sys.exit(3)
"""


def _limit_file_size() -> None:
    # RLIMIT_FSIZE makes the kernel refuse large writes (EFBIG), even for root. It is set in
    # a child only: in this process it would also stop pytest writing its own log file.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))


def test_write_beyond_file_size_limit_leaves_old_partition(tmp_path: Path) -> None:
    write_scores(tmp_path, DAY1, 2, tag="old")
    child = subprocess.run(
        [sys.executable, "-c", _WRITE_PAST_LIMIT, str(tmp_path)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
        check=False,
    )
    assert child.returncode == 3, child.stderr
    path, message = child.stdout.splitlines()[:2]
    assert path == str(tmp_path / SCORES / "2024-03-01")
    assert "EFBIG" in message
    assert all(len(p) == 2 for p in read_all_ways(tmp_path).values())
    assert work_leftovers(tmp_path) == []


def test_results_root_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(OutputWriteError, match="ENOTDIR") as caught:
        write_scores(blocker / "results", DAY1, 1, tag="a")
    assert str(blocker) in caught.value.path


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_results_root(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OutputWriteError, match="EACCES"):
            write_scores(tmp_path / "results", DAY1, 1, tag="a")
    finally:
        tmp_path.chmod(0o755)


def test_partition_must_match_rows(tmp_path: Path) -> None:
    with pytest.raises(SchemaMismatchError, match="batch_date"):
        write_partition(SCORES, DAY2, build_scores_table(score_rows(DAY1, 1)), tmp_path)
    foreign = pa.table({"batch_date": [DAY1]})
    with pytest.raises(SchemaMismatchError, match="schema"):
        write_partition(SCORES, DAY1, foreign, tmp_path)
    runs = build_table(results.RUNS, [asdict(run_summary("r", "running", finished=False))])
    with pytest.raises(ValueError, match="append_run_summary"):
        write_partition(results.RUNS, DAY1, runs, tmp_path)


def run_summary(run_id: str, status: str, finished: bool) -> RunSummary:
    start = datetime(2024, 3, 2, 1, tzinfo=UTC)
    return RunSummary(
        run_id=run_id,
        batch_date=DAY1,
        started_at=start,
        finished_at=start.replace(hour=2) if finished else None,
        n_inputs=10,
        n_scored=8 if finished else 0,
        n_quarantined=2 if finished else 0,
        model_version="v1",
        status=status,
    )


def test_run_summary_rewrites_its_own_row(tmp_path: Path) -> None:
    append_run_summary(run_summary("run-1", "running", finished=False), tmp_path)
    append_run_summary(run_summary("run-1", "completed", finished=True), tmp_path)
    append_run_summary(run_summary("run-2", "failed", finished=True), tmp_path)
    runs = read_table(results.RUNS, tmp_path, DAY1)
    assert dict(zip(runs["run_id"].to_pylist(), runs["status"].to_pylist(), strict=True)) == {
        "run-1": "completed",
        "run-2": "failed",
    }
    assert runs.schema.field("finished_at").type == pa.timestamp("us", tz="UTC")
    assert work_leftovers(tmp_path) == []


@pytest.mark.parametrize("run_id", ["../escape", ".hidden", "a/b", ""])
def test_run_id_must_be_a_plain_file_name(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(SchemaMismatchError, match="run_id"):
        append_run_summary(run_summary(run_id, "running", finished=False), tmp_path)


def test_reading_before_any_write_gives_an_empty_typed_table(tmp_path: Path) -> None:
    table = read_table(QUARANTINE, tmp_path)
    assert table.num_rows == 0
    assert table.schema.equals(results.table_schema(QUARANTINE))


def quarantine_rows(batch_date: date, n: int) -> list[dict[str, Any]]:
    at = datetime(2024, 3, 2, 1, tzinfo=UTC)
    return [
        {
            "batch_date": batch_date,
            "source_path": f"/incoming/{batch_date}/bad{i}.dcm",
            "stage": "read",
            "reasons": "not_dicom",
            "run_id": "run-a",
            "quarantined_at": at,
        }
        for i in range(n)
    ]


def evaluation_rows(evaluation_id: str) -> list[dict[str, Any]]:
    metrics = ("accuracy", "balanced_accuracy", "macro_f1", "mae", "ece")
    return [
        {
            "evaluation_id": evaluation_id,
            "evaluated_at": datetime(2024, 3, 3, tzinfo=UTC),
            "model_version": "v1",
            "role": "monitored",
            "data_fingerprint": "sha256:" + "0" * 64,
            "split": "test",
            "n": 10,
            **dict.fromkeys(metrics, 0.5),
            "promoted": False,
            "decision_reason": "monitoring only",
            "report_dir": "/reports/e1",
        }
    ]


def write_every_table(root: Path) -> None:
    """Two nights of scores, quarantine and runs, and one evaluation, by koa's writers."""
    for day in (DAY1, DAY2):
        write_scores(root, day, 3, tag=str(day))
        write_partition(QUARANTINE, day, build_table(QUARANTINE, quarantine_rows(day, 2)), root)
        append_run_summary(
            replace(run_summary(f"run-{day}", "completed", True), batch_date=day), root
        )
    write_evaluation("e1", evaluation_rows("e1"), root)


def analyst_reads(directory: Path) -> dict[str, pd.DataFrame]:
    """What an analyst's first read returns in each reader: nothing of koa is involved."""
    return {
        "pandas": pd.read_parquet(directory),
        "polars": pl.read_parquet(directory / "**/*.parquet").to_pandas(),
        "duckdb": duckdb.execute(
            f"select * from read_parquet('{directory}/**/*.parquet', hive_partitioning=true)"
        ).df(),
    }


@pytest.mark.parametrize("table_name", [SCORES, QUARANTINE, results.RUNS, EVALUATIONS])
def test_every_reader_sees_exactly_the_documented_columns(tmp_path: Path, table_name: str) -> None:
    write_every_table(tmp_path)
    schema = evaluations_schema() if table_name == EVALUATIONS else results.table_schema(table_name)
    rows = {SCORES: 6, QUARANTINE: 4, results.RUNS: 2, EVALUATIONS: 1}[table_name]
    for reader, frame in analyst_reads(tmp_path / table_name).items():
        assert sorted(frame.columns) == sorted(schema.names), reader
        assert len(frame) == rows, reader


@pytest.mark.parametrize("table_name", [SCORES, QUARANTINE, results.RUNS])
def test_batch_date_is_a_date_in_every_reader(tmp_path: Path, table_name: str) -> None:
    write_every_table(tmp_path)
    directory = tmp_path / table_name
    pandas = pd.read_parquet(directory)["batch_date"]
    assert {type(day) for day in pandas} == {date} and set(pandas) == {DAY1, DAY2}
    polars = pl.read_parquet(directory / "**/*.parquet")["batch_date"]
    assert polars.dtype == pl.Date and set(polars) == {DAY1, DAY2}
    duck = duckdb.execute(
        "select distinct typeof(batch_date), batch_date "
        f"from read_parquet('{directory}/**/*.parquet', hive_partitioning=true) order by 2"
    ).fetchall()
    assert duck == [("DATE", DAY1), ("DATE", DAY2)]


def to_legacy_layout(root: Path, table_name: str) -> list[str]:
    """Rename a table's partitions to ``batch_date=YYYY-MM-DD``, as koa used to write them."""
    for partition in sorted((root / table_name).iterdir()):
        partition.rename(partition.with_name(f"batch_date={partition.name}"))
    return sorted(p.name for p in (root / table_name).iterdir())


def partition_names(root: Path, table_name: str) -> list[str]:
    return sorted(p.name for p in (root / table_name).iterdir())


def test_legacy_partitions_are_read_and_renamed_by_the_first_write(tmp_path: Path) -> None:
    write_scores(tmp_path, DAY1, 3, tag="old")
    append_run_summary(run_summary("run-1", "completed", finished=True), tmp_path)
    assert to_legacy_layout(tmp_path, SCORES) == ["batch_date=2024-03-01"]
    to_legacy_layout(tmp_path, results.RUNS)
    assert read_scores(tmp_path, DAY1).num_rows == 3
    assert read_table(results.RUNS, tmp_path).num_rows == 1

    write_scores(tmp_path, DAY2, 2, tag="new")
    assert partition_names(tmp_path, SCORES) == ["2024-03-01", "2024-03-02"]
    for reader, paths in read_all_ways(tmp_path).items():
        assert len(paths) == 5, reader
    append_run_summary(
        replace(run_summary("run-2", "completed", finished=True), batch_date=DAY2), tmp_path
    )
    assert partition_names(tmp_path, results.RUNS) == ["2024-03-01", "2024-03-02"]
    assert set(pd.read_parquet(tmp_path / results.RUNS)["run_id"]) == {"run-1", "run-2"}
    assert work_leftovers(tmp_path) == []


def test_recover_renames_legacy_partitions_and_restores_a_legacy_aside_one(
    tmp_path: Path,
) -> None:
    for day in (DAY1, DAY2):
        write_partition(QUARANTINE, day, build_table(QUARANTINE, quarantine_rows(day, 2)), tmp_path)
    to_legacy_layout(tmp_path, QUARANTINE)
    # A crash of the old writer between its two fallback renames left DAY2 aside in _work.
    aside = tmp_path / results.WORK_DIR / QUARANTINE / "batch_date=2024-03-02.0a1b.old"
    (tmp_path / QUARANTINE / "batch_date=2024-03-02").rename(aside)

    results.recover(tmp_path, QUARANTINE)
    assert partition_names(tmp_path, QUARANTINE) == ["2024-03-01", "2024-03-02"]
    assert sorted(set(pd.read_parquet(tmp_path / QUARANTINE)["batch_date"])) == [DAY1, DAY2]
    assert work_leftovers(tmp_path) == []


def test_two_copies_of_a_night_stop_the_write_and_keep_both(tmp_path: Path) -> None:
    write_scores(tmp_path, DAY1, 3, tag="legacy")
    to_legacy_layout(tmp_path, SCORES)
    shutil.copytree(tmp_path / SCORES / "batch_date=2024-03-01", tmp_path / SCORES / "2024-03-01")

    with pytest.raises(OutputWriteError, match="batch_date=2024-03-01 beside it holds the same"):
        write_scores(tmp_path, DAY2, 1, tag="new")
    assert partition_names(tmp_path, SCORES) == ["2024-03-01", "batch_date=2024-03-01"]


def test_version_1_partitions_read_with_their_side_and_null_knee_columns(tmp_path: Path) -> None:
    """A night written before scores were per knee (no knee columns) still reads."""
    current = build_scores_table(score_rows(DAY1, 4, tag="v1"))
    knee_columns = [
        name
        for name in current.schema.names
        if name not in {"batch_date", "laterality"} and name not in _V1_COLUMNS
    ]
    old = current.drop_columns(knee_columns)
    folder = tmp_path / SCORES / DAY1.isoformat()
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "part-0.parquet")
    write_scores(tmp_path, DAY2, 2, tag="v2")
    table = results.read_table(SCORES, tmp_path)
    rows = {row["source_path"]: row for row in table.to_pylist()}
    for row in old.to_pylist():
        read = rows[row["source_path"]]
        assert read["knee_side"] == row["laterality"] and read["schema_version"] is None
        assert read["grade_set"] is None
    assert {row["schema_version"] for row in table.to_pylist() if row["batch_date"] == DAY2} == {2}


_V1_COLUMNS = {
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "patient_key",
    "flipped",
    "source_path",
    "source_sha256",
    "file_format",
    "p_kl0",
    "p_kl1",
    "p_kl2",
    "p_kl3",
    "p_kl4",
    "kl_grade",
    "p_koa",
    "model_version",
    "weights_sha256",
    "preprocess_version",
    "run_id",
    "scored_at",
    "input_mean",
    "input_std",
}
