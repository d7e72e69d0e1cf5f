"""An evaluation outcome as one row of the ``evaluations`` table (``storage.evaluations``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from koa_core.evaluation.evaluate import EvaluationOutcome


def _interval(interval: Any, end: int) -> float | None:
    return None if interval is None else float(interval[end])


def evaluation_row(
    outcome: EvaluationOutcome,
    *,
    evaluation_id: str,
    evaluated_at: datetime,
    role: str,
    promoted: bool,
    reason: str,
) -> dict[str, Any]:
    """One row of the table from an ``evaluate_version`` outcome."""
    metrics = outcome.metrics
    return {
        "evaluation_id": evaluation_id,
        "evaluated_at": evaluated_at,
        "model_version": outcome.version,
        "role": role,
        "data_fingerprint": outcome.dataset_fingerprint,
        "split": outcome.split,
        "n": metrics.n_samples,
        "qwk": metrics.qwk,
        "qwk_ci_low": _interval(metrics.qwk_ci, 0),
        "qwk_ci_high": _interval(metrics.qwk_ci, 1),
        "auc_koa": metrics.auc_koa,
        "auc_koa_ci_low": _interval(metrics.auc_koa_ci, 0),
        "auc_koa_ci_high": _interval(metrics.auc_koa_ci, 1),
        "accuracy": metrics.accuracy,
        "balanced_accuracy": metrics.balanced_accuracy,
        "macro_f1": metrics.macro_f1,
        "mae": metrics.mae,
        "ece": metrics.ece,
        "ece_calibrated": metrics.ece_calibrated,
        "ece_ci_low": _interval(metrics.ece_ci, 0),
        "ece_ci_high": _interval(metrics.ece_ci, 1),
        "ece_calibrated_ci_low": _interval(metrics.ece_calibrated_ci, 0),
        "ece_calibrated_ci_high": _interval(metrics.ece_calibrated_ci, 1),
        "temperature": outcome.temperature,
        "promoted": promoted,
        "decision_reason": reason,
        "report_dir": str(outcome.out_dir),
        "conformal_level": metrics.conformal_level,
        "conformal_coverage": metrics.conformal_coverage,
        "conformal_mean_set_size": metrics.conformal_mean_set_size,
    }
