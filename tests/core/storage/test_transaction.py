"""A night's commit across scores, quarantine and runs: SIGKILLed at each step, all or nothing."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from koa_core.storage import results, transaction
from tests.core.storage.commit_process import DAY, commit_night, night

REPO_ROOT = Path(__file__).resolve().parents[3]
TABLES = (results.SCORES, results.QUARANTINE, results.RUNS)

# (when, target, nth, extra flags, whether the night is committed after the kill)
KILL_POINTS = [
    ("after", "_stage_partition", 1, (), False),  # scores staged
    ("after", "_stage_partition", 2, (), False),  # quarantine staged
    ("after", "_stage_run", 1, (), False),  # runs staged, no record yet
    ("before", "replace", 1, (), False),  # record written to its temporary name only
    ("after", "_write_record", 1, (), True),  # the commit point
    ("after", "_publish", 1, (), True),  # scores published, quarantine and runs not
    ("after", "_publish", 2, (), True),  # runs not yet published
    ("after", "_publish", 3, (), True),  # all published, before the cleanup
    ("before", "rmtree", 1, (), True),  # record deleted, old partitions still aside
    ("after", "rename", 1, ("fallback",), True),  # no RENAME_EXCHANGE: scores moved aside
    ("after", "rename", 3, ("fallback",), True),  # quarantine moved aside, scores new
]


def kill_commit(
    root: Path, when: str, target: str, nth: int, *flags: str
) -> subprocess.CompletedProcess[str]:
    """Commit the night tagged ``new`` in a child process that SIGKILLs itself at a step."""
    script = [sys.executable, "-m", "tests.core.storage.commit_process", str(root), "new"]
    return subprocess.run(
        [*script, when, target, str(nth), *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def snapshot(root: Path) -> dict[str, pd.DataFrame]:
    """Every table as koa reads it (``read_table`` finishes a pending commit first)."""
    return {name: results.read_table(name, root).to_pandas() for name in TABLES}


def raw_run_ids(root: Path, table_name: str) -> set[str]:
    """``run_id``s an outside reader (pyarrow over the files, no koa) sees in a table."""
    directory = root / table_name
    if not directory.is_dir():
        return set()
    schema = results.table_schema(table_name)
    table = ds.dataset(directory, format="parquet", schema=schema).to_table()
    return set(table.column("run_id").to_pylist())


def assert_same(actual: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(actual[name], expected[name], obj=name)


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, pd.DataFrame]]:
    """The old night alone, then the new night written over it without a crash."""
    root = tmp_path_factory.mktemp("reference")
    commit_night(root, "old", 3)
    old = snapshot(root)
    commit_night(root, "new", 5)
    return {"old": old, "new": snapshot(root)}


@pytest.mark.parametrize(("when", "target", "nth", "flags", "committed"), KILL_POINTS)
def test_a_commit_killed_at_any_step_leaves_one_night_in_every_table(
    tmp_path: Path,
    expected: dict[str, dict[str, pd.DataFrame]],
    when: str,
    target: str,
    nth: int,
    flags: tuple[str, ...],
    committed: bool,
) -> None:
    commit_night(tmp_path, "old", 3)
    child = kill_commit(tmp_path, when, target, nth, *flags)
    assert child.returncode == -signal.SIGKILL, child.stderr

    # Before any recovery, an outside reader never sees two nights in one table.
    for name in (results.SCORES, results.QUARANTINE):
        assert len(raw_run_ids(tmp_path, name)) <= 1, name

    assert_same(snapshot(tmp_path), expected["new" if committed else "old"])
    transaction.recover_all(tmp_path)
    work = tmp_path / results.WORK_DIR
    assert sorted(p.name for p in work.glob("*tx-*")) == []
    assert_same(snapshot(tmp_path), expected["new" if committed else "old"])

    commit_night(tmp_path, "new", 5)
    assert_same(snapshot(tmp_path), expected["new"])


def test_a_one_table_write_finishes_a_pending_commit_first(tmp_path: Path) -> None:
    commit_night(tmp_path, "old", 3)
    assert kill_commit(tmp_path, "after", "_write_record", 1).returncode == -signal.SIGKILL
    tables, _ = night("other", 1)
    results.write_partition(results.SCORES, DAY, tables[results.SCORES], tmp_path)
    # Seen without koa's reader: the killed commit was rolled forward before the write.
    assert raw_run_ids(tmp_path, results.SCORES) == {"run-other"}
    assert raw_run_ids(tmp_path, results.QUARANTINE) == {"run-new"}
    assert raw_run_ids(tmp_path, results.RUNS) == {"run-old", "run-new"}


def test_the_first_night_killed_before_its_record_leaves_nothing(tmp_path: Path) -> None:
    child = kill_commit(tmp_path, "before", "_write_record", 1)
    assert child.returncode == -signal.SIGKILL, child.stderr
    transaction.recover_all(tmp_path)
    assert all(snapshot(tmp_path)[name].empty for name in TABLES)
    assert list((tmp_path / results.WORK_DIR).glob("*tx-*")) == []


def test_a_reader_takes_no_lock_when_no_commit_is_pending(tmp_path: Path) -> None:
    # Without a record read_table creates nothing (no lock file): a read-only copy reads.
    commit_night(tmp_path, "old", 3)
    shutil.rmtree(tmp_path / results.WORK_DIR)
    assert results.read_table(results.SCORES, tmp_path).num_rows == 3
    assert not (tmp_path / results.WORK_DIR).exists()
