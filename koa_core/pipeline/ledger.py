"""A night's bookkeeping: turn manifest, failure and prediction rows into result-table rows.

Every input of a batch ends up in exactly one of two tables: ``scores`` (one row per scored
image) or ``quarantine`` (one row per input that could not be scored, with its reasons).
``account`` checks that promise before anything is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from koa_core.config import Settings
from koa_core.errors import KoaError
from koa_core.imaging.transforms import PREPROCESS_VERSION
from koa_core.privacy import pseudonymise
from koa_core.schema import GRADES, PROBABILITY_COLUMNS

T = TypeVar("T")


class AccountingError(KoaError):
    """Inputs that are neither scored nor quarantined, or that are both (a bug, never data)."""


@dataclass(frozen=True)
class RunContext:
    """What every row of one run shares."""

    batch_date: date
    run_id: str
    model_version: str
    weights_sha256: str


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def ramped(items: Sequence[T], size: int, first: int) -> Iterator[list[T]]:
    """Slices of ``items`` that start at ``first`` and double up to ``size``.

    Small first chunks let scoring start within seconds of a night's listing (the first
    result arrives after ``first`` images, not ``size``); full chunks then keep the
    per-task overhead low.
    """
    start, step = 0, max(1, min(first, size))
    while start < len(items):
        yield list(items[start : start + step])
        start += step
        step = min(2 * step, size)


def quarantine_row(
    row: Mapping[str, Any],
    stage: str,
    reasons: str,
    detail: str | None,
    run: RunContext,
    at: datetime,
) -> dict[str, Any]:
    """A ``quarantine`` table row for one input (``row`` needs ``origin`` and ``sha256``)."""
    return {
        "batch_date": run.batch_date,
        "source_path": row["origin"],
        "source_sha256": row.get("sha256"),
        "stage": stage,
        "reasons": reasons,
        "detail": detail,
        "run_id": run.run_id,
        "quarantined_at": at,
    }


def patient_column(patient_id: str | None, settings: Settings) -> str | None:
    """The raw id only when the site enabled it, else its keyed hash."""
    if settings.emit_raw_patient_ids:
        return patient_id
    return pseudonymise(patient_id, settings.site_secret.get_secret_value())


def score_row(
    row: Mapping[str, Any], run: RunContext, settings: Settings, at: datetime
) -> dict[str, Any]:
    """A ``scores`` table row from a scored prediction row."""
    return {
        "batch_date": run.batch_date,
        "sop_instance_uid": row.get("sop_instance_uid"),
        "study_instance_uid": row.get("study_instance_uid"),
        "series_instance_uid": row.get("series_instance_uid"),
        "patient_key": patient_column(row.get("patient_id"), settings),
        "laterality": row.get("laterality"),
        "flipped": bool(row["flipped"]),
        "source_path": row["origin"],
        "source_sha256": row["sha256"],
        "file_format": row["file_format"],
        **{name: float(row[name]) for name in PROBABILITY_COLUMNS},
        "kl_grade": int(row["kl_grade"]),
        "p_koa": float(row["p_koa"]),
        "model_version": run.model_version,
        "weights_sha256": run.weights_sha256,
        "preprocess_version": PREPROCESS_VERSION,
        "run_id": run.run_id,
        "scored_at": at,
        "input_mean": float(row["mean"]),
        "input_std": float(row["std"]),
    }


def account(
    origins: Iterable[str],
    scores: Sequence[Mapping[str, Any]],
    quarantine: Sequence[Mapping[str, Any]],
) -> None:
    """Raise unless every input origin appears exactly once across scores and quarantine."""
    expected = Counter(origins)
    seen = Counter(row["source_path"] for row in [*scores, *quarantine])
    missing = sorted(set(expected) - set(seen))
    extra = sorted(origin for origin, count in seen.items() if count > expected.get(origin, 0))
    if missing or extra:
        raise AccountingError(
            f"{len(missing)} input(s) neither scored nor quarantined (first: {missing[:3]}); "
            f"{len(extra)} written more than once (first: {extra[:3]})"
        )


def grade_distribution(scores: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Count of scored images per KL grade, every grade present."""
    counts = Counter(int(row["kl_grade"]) for row in scores)
    return {grade: counts.get(grade, 0) for grade in GRADES}
