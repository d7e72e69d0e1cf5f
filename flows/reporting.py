"""Prefect artifacts of a nightly run: a Markdown summary and the table of quarantined files."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from koa_core.pipeline.commit import NightSummary
from koa_core.privacy import Redactor

P_KOA_BINS = 10


def _histogram(values: Sequence[float]) -> str:
    counts, edges = np.histogram(values, bins=P_KOA_BINS, range=(0.0, 1.0))
    widest = max(int(counts.max()), 1) if len(values) else 1
    lines = [
        f"{edges[i]:.1f}-{edges[i + 1]:.1f} | {'#' * round(20 * c / widest)} {c}"
        for i, c in enumerate(counts)
    ]
    return "\n".join(["```", *lines, "```"])


def referred_knees(scores: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The knees referred to a reader, by pseudonymised ids only (no path, no patient id)."""
    return [
        {
            "patient_key": row["patient_key"] or "",
            "sop_instance_uid": row["sop_instance_uid"] or "",
            "knee_side": row["knee_side"],
            "kl_grade": row["kl_grade"],
            "grade_set": " ".join(str(grade) for grade in row["grade_set"]),
            "p_koa": round(float(row["p_koa"]), 3),
            "refer_reason": row["refer_reason"],
        }
        for row in scores
        if row["refer"]
    ]


def _referral_lines(referred: Sequence[Mapping[str, Any]]) -> str:
    reasons = Counter(r for row in referred for r in str(row["refer_reason"]).split(";"))
    return "\n".join(f"| {r} | {n} |" for r, n in reasons.most_common()) or "| - | 0 |"


def nightly_markdown(
    summary: NightSummary,
    quarantine: Sequence[Mapping[str, Any]],
    referred: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The run summary a person reads in the Prefect UI."""
    reasons = Counter(r for row in quarantine for r in str(row["reasons"]).split(";"))
    grades = "\n".join(f"| KL{g} | {n} |" for g, n in summary.grades.items())
    reason_lines = "\n".join(f"| {r} | {n} |" for r, n in reasons.most_common()) or "| - | 0 |"
    counts = (
        f"| {summary.n_inputs} | {summary.n_films_scored} | {summary.n_scored} "
        f"| {len(referred)} | {summary.n_quarantined} | {summary.model_version} |"
    )
    return f"""# Nightly scoring {summary.batch_date.isoformat()}: {summary.status}

| inputs | films scored | knees scored | knees referred | quarantined | model |
|---|---|---|---|---|---|
{counts}

## Grade distribution
| grade | knees |
|---|---|
{grades}

## Referred to a reader
| reason | knees |
|---|---|
{_referral_lines(referred)}

## P(KOA) histogram
{_histogram(summary.p_koa)}

## Quarantine reasons
| reason | files |
|---|---|
{reason_lines}

Results: `{summary.results_dir}` · Data Docs: `{summary.docs_path or "none"}`
"""


def publish_nightly_artifacts(
    summary: NightSummary,
    quarantine: Sequence[Mapping[str, Any]],
    redactor: Redactor,
    scores: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Attach the summary, the referred knees and the quarantine table to the flow run.

    Every text goes through ``redactor``: source paths may hold patient ids or names.
    """
    key = f"nightly-{summary.batch_date.isoformat()}"
    referred = referred_knees(scores)
    create_markdown_artifact(
        redactor(nightly_markdown(summary, quarantine, referred)),
        key=key,
        description="Nightly scoring summary",
    )
    table = [
        {
            "source_path": redactor(row["source_path"]),
            "stage": row["stage"],
            "reasons": row["reasons"],
            "detail": redactor(row["detail"] or ""),
        }
        for row in quarantine
    ]
    create_table_artifact(
        table, key=f"{key}-quarantine", description="Files quarantined, with reasons"
    )
    create_table_artifact(
        [{name: redactor(str(value)) for name, value in row.items()} for row in referred],
        key=f"{key}-referred",
        description="Knees referred to a reader (pseudonymised ids)",
    )
