"""The evaluate flow: re-test a model on labelled data and watch its nightly inputs for drift."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from flows.model_reports import default_data, evaluation_id, plots_markdown, record_evaluation
from koa_core.config import get_settings
from koa_core.errors import DatasetError
from koa_core.evaluation.drift import DriftReport, DriftThresholds, drift_markdown, load_reference
from koa_core.evaluation.drift import window_reports as drift_window_reports
from koa_core.evaluation.evaluate import TEST_SPLIT, EvaluationOutcome, evaluate_version
from koa_core.evaluation.report import HEADLINES
from koa_core.evaluation.rows import evaluation_row
from koa_core.registry import ModelRegistry, ModelVersion

DRIFT_EVENT = "koa.drift.detected"


@task
def evaluate_on_test(version: str, data: str, out_dir: str) -> EvaluationOutcome:
    """Evaluate one version on the dataset's test split; the report goes to ``out_dir``."""
    return evaluate_version(version, Path(data), TEST_SPLIT, out_dir=Path(out_dir))


@task
def drift_reference(version: str, data: str | None) -> pa.Table:
    """The model's reference distributions (computed once, then read from the registry)."""
    return load_reference(ModelRegistry().get(version), Path(data) if data else None)


@task
def drift_reports(
    reference: pa.Table, version: str, end: date, window_days: int
) -> list[DriftReport]:
    """Per-night and whole-window drift of the scored nights in the window."""
    results_dir = get_settings().results_dir
    return drift_window_reports(reference, results_dir, version, end, window_days)


def emit_drift_event(report: DriftReport) -> str | None:
    """Announce a drifted scope as ``koa.drift.detected`` on ``koa.model.<version>``.

    An automation can match the event name and resource to act (retrain, page someone).
    Returns the event id, or None when events are disabled.
    """
    event = emit_event(
        event=DRIFT_EVENT,
        resource={
            "prefect.resource.id": f"koa.model.{report.model_version}",
            "prefect.resource.name": report.model_version,
        },
        payload=report.to_dict(),
    )
    return None if event is None else str(event.id)


def _labelled_data(data: str | None) -> Path | None:
    if data is not None:
        if not Path(data).is_dir():
            raise DatasetError(f"{data}: labelled dataset folder does not exist")
        return Path(data)
    default = default_data(get_settings())
    return default if default.is_dir() else None


def _re_evaluate(version: ModelVersion, data: Path) -> EvaluationOutcome:
    settings = get_settings()
    evaluation = evaluation_id()
    out_dir = settings.home / "evaluations" / evaluation / f"monitored-{version.version}"
    outcome = evaluate_on_test(version.version, str(data), str(out_dir))
    champion = ModelRegistry().champion()
    role = "champion" if champion and champion.version == version.version else "monitored"
    row = evaluation_row(
        outcome,
        evaluation_id=evaluation,
        evaluated_at=datetime.now(UTC),
        role=role,
        promoted=False,
        reason="scheduled re-evaluation; promotion is decided only by the retrain flow",
    )
    record_evaluation(evaluation, [row], str(settings.results_dir))
    return outcome


def _evaluation_markdown(outcome: EvaluationOutcome, data: Path) -> str:
    metrics = outcome.metrics.to_dict()
    lines = [
        f"# Model {outcome.version} on `{data}` split `{TEST_SPLIT}`",
        "",
        f"{outcome.metrics.n_samples} images, "
        f"data fingerprint `{outcome.dataset_fingerprint[:12]}`.",
        "",
        "| Metric | Value |",
        "|---|---:|",
    ]
    lines += [
        f"| {h.label} | {'n/a' if metrics.get(h.key) is None else f'{metrics[h.key]:.3f}'} |"
        for h in HEADLINES
    ]
    return "\n".join([*lines, "", plots_markdown([(outcome.version, outcome)])])


@flow(name="evaluate")
def evaluate(
    model: str = "champion",
    data: str | None = None,
    window_days: int = 7,
    end_date: date | None = None,
) -> dict[str, Any]:
    """Re-evaluate a model on labelled data and report drift of its recent nightly scores.

    Drift compares the last ``window_days`` nights of the ``scores`` table (P(KOA), KL
    grade, input mean and std) with the model's reference: its predictions on the
    validation split it was trained with. Each drifted night (and the pooled window) is
    flagged in a Markdown artifact and emitted as a ``koa.drift.detected`` event.

    Args:
        model: Registry reference: ``champion``, ``latest`` or a version id.
        data: Labelled dataset to re-evaluate on (its ``test`` split); default
            ``$KOA_HOME/datasets/kl`` when it exists, else no re-evaluation. Also the
            reference's data when the model's training data is gone.
        window_days: Nights to look back, ending at ``end_date``.
        end_date: Last night of the window (default: today).
    """
    logger = get_run_logger()
    version = ModelRegistry().get(model)
    labelled = _labelled_data(data)
    outcome = _re_evaluate(version, labelled) if labelled else None
    if outcome is not None and labelled is not None:
        create_markdown_artifact(
            _evaluation_markdown(outcome, labelled),
            key="model-evaluation",
            description=f"Model {version.version} on {labelled.name}/{TEST_SPLIT}",
        )
    end = end_date or date.today()
    reference = drift_reference(version.version, str(labelled) if labelled else None)
    reports = drift_reports(reference, version.version, end, window_days)
    drifted = [report for report in reports if report.drifted]
    events = [emit_drift_event(report) for report in drifted]
    for report in drifted:
        logger.warning("drift in %s for model %s", report.scope, version.version)
    create_markdown_artifact(
        f"# Drift of model {version.version}, {window_days} nights to {end}\n\n"
        + drift_markdown(reports, DriftThresholds()),
        key="model-drift",
        description=f"Drift: {len(drifted)} of {len(reports)} scopes flagged",
    )
    return {
        "model_version": version.version,
        "metrics": None if outcome is None else outcome.metrics.to_dict(),
        "drift": [report.to_dict() for report in reports],
        "drifted_scopes": [report.scope for report in drifted],
        "events": events,
    }
