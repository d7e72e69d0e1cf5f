"""Commit one night in its own process, SIGKILLed at a chosen step (test-only wrappers).

``python -m tests.core.storage.commit_process ROOT TAG WHEN TARGET N [fallback]``: commits
the night ``night(TAG)`` to ``ROOT`` and kills itself ``WHEN`` (``before`` or ``after``)
the ``N``-th call of ``TARGET``: a step of ``koa_core.storage.transaction`` (``_stage_partition``,
``_write_record``, ``_publish``...), ``rmtree`` (the cleanup), ``rename`` (``Path.rename``,
the fallback's renames) or ``replace`` (``Path.replace``, first the record's rename).
``fallback`` makes ``RENAME_EXCHANGE`` unavailable.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from koa_core.schema import PROBABILITY_COLUMNS
from koa_core.storage import results, transaction
from tests.knee_columns import scores_knee

DAY = date(2026, 3, 14)
_AT = datetime(2026, 3, 15, 1, 2, 3, tzinfo=UTC)


def night(tag: str, n_scored: int) -> tuple[dict[str, pa.Table], results.RunSummary]:
    """A night's scores and quarantine partitions and its runs row, every row tagged."""
    scores = [
        {
            "batch_date": DAY,
            "flipped": False,
            "source_path": f"{tag}/knee{i}.dcm",
            "source_sha256": f"{i:064x}",
            "file_format": "dicom",
            **dict.fromkeys(PROBABILITY_COLUMNS, 0.2),
            "kl_grade": i % 5,
            "p_koa": 0.6,
            "model_version": "v1",
            "weights_sha256": "f" * 64,
            "preprocess_version": "1",
            "run_id": f"run-{tag}",
            "scored_at": _AT,
            "input_mean": 0.5,
            "input_std": 0.25,
            **scores_knee(),
        }
        for i in range(n_scored)
    ]
    quarantine = [
        {
            "batch_date": DAY,
            "source_path": f"{tag}/bad.dcm",
            "stage": "read",
            "reasons": "not_dicom",
            "run_id": f"run-{tag}",
            "quarantined_at": _AT,
        }
    ]
    run = results.RunSummary(
        f"run-{tag}", DAY, _AT, _AT, n_scored + 1, n_scored, 1, "v1", "completed"
    )
    tables = {
        results.SCORES: results.build_scores_table(scores),
        results.QUARANTINE: results.build_table(results.QUARANTINE, quarantine),
    }
    return tables, run


def commit_night(root: Path, tag: str, n_scored: int) -> None:
    """``transaction.commit`` of ``night(tag, n_scored)``."""
    tables, run = night(tag, n_scored)
    transaction.commit(root, DAY, tables, [run])


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(real: Callable[..., Any], when: str, nth: int) -> Callable[..., Any]:
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if when == "before" and calls["n"] == nth:
            _die()
        value = real(*args, **kwargs)
        if when == "after" and calls["n"] == nth:
            _die()
        return value

    return wrapper


def _no_exchange(a: Path, b: Path) -> None:
    raise results._ExchangeUnsupportedError


def main(argv: list[str]) -> None:
    root, tag, when, target, nth = Path(argv[0]), argv[1], argv[2], argv[3], int(argv[4])
    if "fallback" in argv[5:]:
        results._exchange = _no_exchange
    if target == "rmtree":
        shutil.rmtree = _wrap(shutil.rmtree, when, nth)  # type: ignore[assignment]
    elif target in ("rename", "replace"):
        setattr(pathlib.Path, target, _wrap(getattr(pathlib.Path, target), when, nth))
    else:
        setattr(transaction, target, _wrap(getattr(transaction, target), when, nth))
    commit_night(root, tag, 5)
    raise SystemExit("the commit finished: the kill point was never reached")


if __name__ == "__main__":
    main(sys.argv[1:])
