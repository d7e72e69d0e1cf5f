"""Tests for the evaluations table's prediction-set columns and files written before them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from koa_core.storage.evaluations import (
    EVALUATIONS,
    evaluations_schema,
    read_evaluations,
    write_evaluation,
)
from tests.core.storage.test_results import evaluation_rows

SET_COLUMNS = ("conformal_level", "conformal_coverage", "conformal_mean_set_size")


def test_set_columns_round_trip_and_older_files_read_back_null(tmp_path: Path) -> None:
    # A file as koa wrote it before prediction sets: the schema without their columns.
    old_schema = pa.schema([f for f in evaluations_schema() if f.name not in SET_COLUMNS])
    old = pa.Table.from_pylist(evaluation_rows("e0"), schema=old_schema)
    (tmp_path / EVALUATIONS).mkdir()
    pq.write_table(old, tmp_path / EVALUATIONS / "e0.parquet")
    new = [
        {**row, "conformal_level": 0.9, "conformal_coverage": 0.91, "conformal_mean_set_size": 1.6}
        for row in evaluation_rows("e1")
    ]
    write_evaluation("e1", new, tmp_path)

    table = read_evaluations(tmp_path)
    assert table.schema == evaluations_schema()
    rows = {row["evaluation_id"]: row for row in table.to_pylist()}
    assert [rows["e0"][name] for name in SET_COLUMNS] == [None, None, None]
    assert [rows["e1"][name] for name in SET_COLUMNS] == [0.9, 0.91, 1.6]
