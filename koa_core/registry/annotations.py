"""Metrics measured after registration, appended beside a version and never into its card.

A version's ``card.json`` is written once, when it is registered. Evaluations that come
later (the test split after training, a re-test on a new dataset) are appended as one JSON
line each to ``versions/<version>/metrics.jsonl``; the latest line per split wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from koa_core.storage.files import append_json_line, read_json_lines

METRICS_LOG = "metrics.jsonl"


def append_metrics(
    version_dir: Path,
    split: str,
    metrics: Mapping[str, Any],
    *,
    recorded_at: datetime | None = None,
) -> None:
    """Append ``metrics`` for ``split`` to the version's annotation log (one durable line)."""
    at = (recorded_at or datetime.now(UTC)).astimezone(UTC)
    record = {"recorded_at": at.isoformat(), "split": split, "metrics": dict(metrics)}
    append_json_line(version_dir / METRICS_LOG, record)


def latest_metrics(version_dir: Path) -> dict[str, dict[str, Any]]:
    """The last metrics recorded per split (``{}`` before the first annotation)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_json_lines(version_dir / METRICS_LOG):
        latest[str(record["split"])] = dict(record["metrics"])
    return latest
