"""Commit a night: write its scores, quarantine and runs rows, decide its status, summarise it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from koa_core.config import Settings
from koa_core.pipeline.ledger import NightLedger
from koa_core.pipeline.source_paths import PATH_MAP_FILE, write_path_map
from koa_core.storage import results, transaction


@dataclass(frozen=True)
class NightSummary:
    """What one committed night came to; ``failure`` says why a failed night failed."""

    batch_date: date
    run_id: str
    model_version: str
    n_inputs: int
    n_films_scored: int
    n_scored: int
    """Knees scored (rows written to ``scores``)."""
    n_quarantined: int
    grades: dict[int, int]
    p_koa: tuple[float, ...]
    results_dir: Path
    docs_path: Path | None
    status: str
    failure: str | None

    @property
    def failed(self) -> bool:
        """Whether the batch as a whole failed (its rows are written all the same)."""
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (ISO date, str paths, ``""`` without Data Docs): the flow's result."""
        return {
            "batch_date": self.batch_date.isoformat(),
            "run_id": self.run_id,
            "model_version": self.model_version,
            "n_inputs": self.n_inputs,
            "n_films_scored": self.n_films_scored,
            "n_scored": self.n_scored,
            "n_quarantined": self.n_quarantined,
            "grades": dict(self.grades),
            "p_koa": list(self.p_koa),
            "results_dir": str(self.results_dir),
            "docs_path": str(self.docs_path or ""),
            "status": self.status,
            "failure": self.failure,
        }


def batch_failure(n_inputs: int, n_quarantined: int, max_share: float) -> str | None:
    """Why a whole batch must fail: empty, or mostly quarantined (a site or scanner problem).

    Args:
        n_inputs: Files found in the batch.
        n_quarantined: Files quarantined by any check.
        max_share: Largest tolerated quarantined share (``Settings.max_quarantine_share``).

    Returns:
        The reason, or None when the batch may be trusted.
    """
    if n_inputs <= 0:
        return "the batch holds no input files: nothing to score"
    share = n_quarantined / n_inputs
    if share > max_share:
        return (
            f"{n_quarantined} of {n_inputs} files quarantined ({share:.0%}), more than the "
            f"allowed {max_share:.0%}: check the source before trusting this batch"
        )
    return None


def commit_night(
    ledger: NightLedger, settings: Settings, started: datetime, docs_path: Path | None
) -> NightSummary:
    """Check the ledger's accounting, then commit the night's partitions and runs row as one.

    The map from each ``source_path`` back to its real path is written first, to the run's
    own folder (``RunContext.log_dir``): no row is ever written that operators cannot trace.

    Args:
        ledger: Every input of the night, scored or quarantined.
        settings: Supplies ``results_dir``, ``runs_dir`` and ``max_quarantine_share``.
        started: When the run started (the runs row's ``started_at``).
        docs_path: The manifest checks' Data Docs, if any were built.

    Returns:
        The night's summary; ``status`` is ``failed`` when ``batch_failure`` says so.

    Raises:
        AccountingError: An input neither scored nor quarantined, or both; nothing is written.
    """
    ledger.account()
    run, root = ledger.run, settings.results_dir
    write_path_map(run.log_dir(settings.runs_dir) / PATH_MAP_FILE, ledger.real_paths())
    scores, quarantine = ledger.score_rows(), ledger.quarantine_rows()
    failure = batch_failure(ledger.n_inputs, len(quarantine), settings.max_quarantine_share)
    summary = NightSummary(
        batch_date=run.batch_date,
        run_id=run.run_id,
        model_version=run.model_version,
        n_inputs=ledger.n_inputs,
        n_films_scored=ledger.n_films_scored,
        n_scored=len(scores),
        n_quarantined=len(quarantine),
        grades=ledger.grade_distribution(),
        p_koa=tuple(record.p_koa for record in ledger.scores),
        results_dir=root,
        docs_path=docs_path,
        status="failed" if failure else "completed",
        failure=failure,
    )
    # One commit: a crash leaves the previous night in every table or this one in every table.
    transaction.commit(
        root,
        run.batch_date,
        {
            results.SCORES: results.build_scores_table(scores),
            results.QUARANTINE: results.build_table(results.QUARANTINE, quarantine),
        },
        [_run_row(summary, started)],
    )
    return summary


def _run_row(summary: NightSummary, started: datetime) -> results.RunSummary:
    return results.RunSummary(
        summary.run_id,
        summary.batch_date,
        started,
        datetime.now(UTC),
        summary.n_inputs,
        summary.n_scored,
        summary.n_quarantined,
        summary.model_version,
        summary.status,
    )
