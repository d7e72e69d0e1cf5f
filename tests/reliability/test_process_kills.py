"""A nightly run killed while it writes results, and two runs of one night at once."""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest

from flows.nightly import ConcurrentRunError
from koa_core.config import get_settings
from koa_core.storage import results
from tests.reliability.helpers import (
    outcome,
    partition_files,
    report,
    run_nightly,
    stable,
    start_flow_process,
    wait_for_path,
)

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]
FLOW_TIMEOUT_S = 180


def _killed_run(dask_cluster: str, fault: str, markers: Path) -> None:
    process = start_flow_process(dask_cluster, fault, str(markers))
    output, _ = process.communicate(timeout=FLOW_TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL, output


def _live(table_name: str) -> pd.DataFrame:
    return stable(results.read_table(table_name, get_settings().results_dir))


def test_kill_during_the_write_leaves_one_whole_night_and_the_rerun_completes(
    small_night: list[str], dask_cluster: str, tmp_path: Path
) -> None:
    # First night ever, killed with half a Parquet file written: nothing of it is visible.
    _killed_run(dask_cluster, "kill-mid-parquet", tmp_path)
    assert partition_files(results.SCORES) == partition_files(results.QUARANTINE) == []
    assert results.read_table(results.SCORES, get_settings().results_dir).num_rows == 0

    run_nightly(dask_cluster)
    clean = outcome(small_night)
    report("rerun after kill-mid-parquet", clean)
    assert not clean.lost and not clean.duplicated

    # Killed after its commit record, between the tables' renames: the next reader rolls
    # the commit forward, so every table holds the killed run's night (the same rows).
    _killed_run(dask_cluster, "kill-between-tables", tmp_path)
    for table_name, before in (
        (results.SCORES, clean.scores),
        (results.QUARANTINE, clean.quarantine),
    ):
        assert partition_files(table_name) == [results.PARTITION_FILE]
        pd.testing.assert_frame_equal(_live(table_name), stable(before))
    root = get_settings().results_dir
    killed_run = set(results.read_table(results.SCORES, root).column("run_id").to_pylist())
    assert killed_run == set(results.read_table(results.QUARANTINE, root)["run_id"].to_pylist())
    runs = results.read_table(results.RUNS, root).to_pandas()
    assert killed_run <= set(runs["run_id"])  # committed with its runs row

    run_nightly(dask_cluster)
    again = outcome(small_night)
    report("rerun after kill-between-tables", again)
    pd.testing.assert_frame_equal(stable(again.scores), stable(clean.scores))
    pd.testing.assert_frame_equal(stable(again.quarantine), stable(clean.quarantine))
    runs = results.read_table(results.RUNS, root).to_pandas()
    # The run killed mid-Parquet wrote no row; the one killed after its record did.
    assert list(runs["status"]) == ["completed"] * 3
    assert list((get_settings().results_dir / results.WORK_DIR).rglob("*.tmp")) == []


def test_a_second_run_of_the_same_night_is_refused_while_one_writes(
    small_night: list[str], dask_cluster: str, tmp_path: Path
) -> None:
    first = start_flow_process(dask_cluster, "pause-in-write", str(tmp_path))
    try:
        wait_for_path(tmp_path / "paused", first)
        with pytest.raises(ConcurrentRunError, match="in progress"):
            run_nightly(dask_cluster)
        assert partition_files(results.SCORES) == []  # the refused run wrote nothing
    finally:
        (tmp_path / "release").touch()
        output, _ = first.communicate(timeout=FLOW_TIMEOUT_S)
    assert first.returncode == 0, output
    night = outcome(small_night)
    report("concurrent", night)
    assert not night.lost and not night.duplicated
    runs = results.read_table(results.RUNS, get_settings().results_dir).to_pandas()
    assert list(runs["status"]) == ["completed"]
    # The lock is released with the run: the night can be run again.
    run_nightly(dask_cluster)
