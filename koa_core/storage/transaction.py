"""One commit for a night across results tables: stage, write-ahead record, publish, recover.

A commit writes every table a night touches (its ``scores`` and ``quarantine`` partitions
and its ``runs`` file) in four steps, holding the lock of every table:

1. **Stage**: each new partition or file is written and fsynced under
   ``_work/tx-<id>/<table>/...``, where no reader looks.
2. **Record**: ``_work/tx-<id>.json`` names each staged path, its final path and the
   SHA-256 of its Parquet file; it is written to a temporary name, fsynced and renamed
   into place. That rename is the commit point: before it the night is not committed,
   after it the night is, whatever happens next.
3. **Publish**: one rename per table: a partition is swapped with the live one by
   ``renameat2(RENAME_EXCHANGE)`` (else the old one is renamed aside and the new one in),
   the runs file is ``os.replace``d.
4. **Clean up**: the record is deleted, then the tx folder with the old partitions.

``recover_all`` (run by every koa write, by ``read_table`` when a record is present and
by the nightly flow at start) rolls a record forward, finishing step 3 idempotently: a
final partition whose Parquet file has the recorded SHA-256 is already published. A tx
folder without a record is an uncommitted night and is deleted.

What a reader sees: before the record, the old night everywhere. During the publishing
renames (three renames, microseconds), a reader that lists the files itself (pyarrow,
pandas, duckdb, polars) may see the new night in some tables and the old one in others,
and, only where the filesystem lacks ``RENAME_EXCHANGE``, no partition of that night in
the one table between its two renames; never half a partition, never old and new rows of
one table together. After the last rename, the new night everywhere. koa's own
``read_table`` that starts after the commit point finds the record and rolls it forward
first (waiting for the writer's lock), so it returns the new night; one that starts
before returns that table's old or new night, whole.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa

from koa_core.errors import OutputWriteError
from koa_core.storage import results
from koa_core.storage.files import atomic_write_json, file_sha256, fsync_directory

TX_PREFIX = results.TX_PREFIX
_TABLES = (results.QUARANTINE, results.RUNS, results.SCORES)  # lock order: sorted


@dataclass(frozen=True)
class Move:
    """One staged file or partition and where it is published (paths under the root)."""

    staged: str
    final: str
    sha256: str
    is_partition: bool


def commit(
    results_root: Path,
    batch_date: date,
    partitions: Mapping[str, pa.Table],
    runs: Sequence[results.RunSummary] = (),
) -> None:
    """Write a night's partitions and runs rows as one commit (all or nothing).

    Args:
        results_root: ``Settings().results_dir``.
        batch_date: The night; every row must carry it.
        partitions: Table name (``scores``, ``quarantine``) to its new partition, from
            ``build_table``.
        runs: Rows of the runs table, one file per ``run_id``.

    Raises:
        SchemaMismatchError: A table or row that does not fit its schema or date.
        OutputWriteError: Any ``OSError`` on the way; before the commit point nothing is
            visible, after it the next ``recover_all`` finishes the commit.
    """
    for name, table in partitions.items():
        if name == results.RUNS:
            raise ValueError("runs rows go in `runs`, one RunSummary per run")
        results._check_table(name, batch_date, table)
    run_tables = [results.run_table(summary) for summary in runs]
    txid = f"{TX_PREFIX}{uuid.uuid4().hex}"
    try:
        with _all_locked(results_root) as work:
            _recover_all(results_root)
            tx_dir = work / txid
            try:
                moves = [
                    _stage_partition(results_root, tx_dir, name, batch_date, table)
                    for name, table in partitions.items()
                ]
                moves += [
                    _stage_run(results_root, tx_dir, summary, table)
                    for summary, table in zip(runs, run_tables, strict=True)
                ]
                _write_record(work / f"{txid}.json", moves)
            except OSError:
                # Not committed: free the space now (ENOSPC) rather than at the next recovery.
                shutil.rmtree(tx_dir, ignore_errors=True)
                raise
            for move in moves:
                _publish(results_root, move)
            _cleanup(work, txid)
    except OSError as exc:
        raise OutputWriteError(results_root, results._describe(exc)) from exc


def recover_all(results_root: Path) -> None:
    """Roll an interrupted commit forward (record present) or back (no record).

    Also clears what the one-table writers left (``results.recover``) for every table.

    Raises:
        OutputWriteError: The results could not be repaired.
    """
    try:
        with _all_locked(results_root):
            _recover_all(results_root)
    except OSError as exc:
        raise OutputWriteError(results_root / results.WORK_DIR, results._describe(exc)) from exc


def _recover_all(results_root: Path) -> None:
    work = results_root / results.WORK_DIR
    for record in sorted(work.glob(f"{TX_PREFIX}*.json")):
        for move in _read_record(record):
            _publish(results_root, move)
        _cleanup(work, record.name.removesuffix(".json"))
    for leftover in sorted(work.glob(f"{TX_PREFIX}*")) + sorted(work.glob(f".{TX_PREFIX}*")):
        # Staged without a record, or a record torn before its rename: never committed.
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    for table_name in _TABLES:
        results._recover(results_root, table_name)


def _stage_partition(
    root: Path, tx_dir: Path, table_name: str, batch_date: date, table: pa.Table
) -> Move:
    final = results.partition_dir(root, table_name, batch_date)
    staged = tx_dir / table_name / final.name
    staged.parent.mkdir(parents=True, exist_ok=True)
    results._write_parquet_dir(staged, table)
    _fsync_up_to(staged.parent, root)
    sha = file_sha256(staged / results.PARTITION_FILE)
    return Move(str(staged.relative_to(root)), str(final.relative_to(root)), sha, True)


def _stage_run(root: Path, tx_dir: Path, summary: results.RunSummary, table: pa.Table) -> Move:
    final = results.run_file(root, summary)
    staged = tx_dir / results.RUNS / final.parent.name / final.name
    staged.parent.mkdir(parents=True, exist_ok=True)
    results._write_parquet_file(staged, table)
    _fsync_up_to(staged.parent, root)
    return Move(str(staged.relative_to(root)), str(final.relative_to(root)), "", False)


def _fsync_up_to(directory: Path, root: Path) -> None:
    """Make the new entries from ``directory`` up to ``_work`` durable before the record."""
    while directory != root / results.WORK_DIR:
        fsync_directory(directory)
        directory = directory.parent
    fsync_directory(directory)


def _write_record(path: Path, moves: Sequence[Move]) -> None:
    """The commit point: the record's rename into place."""
    atomic_write_json(path, {"moves": [asdict(move) for move in moves]})


def _read_record(path: Path) -> list[Move]:
    return [Move(**move) for move in json.loads(path.read_text(encoding="utf-8"))["moves"]]


def _publish(root: Path, move: Move) -> None:
    """Put one staged path in place; a no-op when it already is (so recovery may repeat it)."""
    staged, final = root / move.staged, root / move.final
    final.parent.mkdir(parents=True, exist_ok=True)
    if not move.is_partition:
        if staged.exists():
            staged.replace(final)
    elif not _holds(final, move.sha256):
        results._swap_in(staged, final)
    fsync_directory(final.parent)


def _holds(partition: Path, sha256: str) -> bool:
    # After an exchange the staged path holds the old partition: only content tells.
    data = partition / results.PARTITION_FILE
    return data.is_file() and file_sha256(data) == sha256


def _cleanup(work: Path, txid: str) -> None:
    """Delete the record (the commit is complete), then the old partitions it kept aside."""
    (work / f"{txid}.json").unlink(missing_ok=True)
    fsync_directory(work)
    shutil.rmtree(work / txid, ignore_errors=True)


@contextmanager
def _all_locked(results_root: Path) -> Iterator[Path]:
    """Hold every table's write lock (in one order, so no two writers deadlock)."""
    with ExitStack() as stack:
        for table_name in _TABLES:
            work = stack.enter_context(results._locked(results_root, table_name))
        yield work.parent
