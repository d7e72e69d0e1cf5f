"""The retrain flow: train a challenger, test it and the champion on one test set, maybe promote."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from koa_core.config import Settings, get_settings
from koa_core.evaluation.evaluate import EvaluationOutcome, evaluate_version, train_and_register
from koa_core.evaluation.report import comparison_table
from koa_core.registry.store import ModelRegistry, PromotionDecision, should_promote
from koa_core.storage.evaluations import evaluation_row, write_evaluation
from koa_core.training.config import TrainConfig
from koa_core.training.loop import EpochStats

DEFAULT_DATASET = "kl"
TEST_SPLIT = "test"
PLOTS = (
    ("Confusion matrix", "confusion_png"),
    ("ROC curves", "roc_png"),
    ("Reliability", "reliability_png"),
)


def default_data(settings: Settings) -> Path:
    """The labelled dataset the flows use when none is given: ``$KOA_HOME/datasets/kl``."""
    return settings.datasets_dir / DEFAULT_DATASET


def evaluation_id() -> str:
    """The flow run's id (so a table row leads to its run in the UI), else a fresh UUID."""
    return str(flow_run.get_id() or uuid4())


def training_config(**values: Any) -> TrainConfig:
    """A ``TrainConfig`` from the flow's parameters; ``None`` keeps the default."""
    return TrainConfig(**{name: value for name, value in values.items() if value is not None})


@task
def train_challenger(config: dict[str, Any], data: str) -> str:
    """Train and register a challenger; returns its version id (never promotes)."""
    logger = get_run_logger()

    def log_epoch(stats: EpochStats) -> None:
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, val QWK %.4f",
            stats.epoch,
            stats.epochs,
            stats.train_loss,
            stats.val_loss,
            stats.val_qwk,
        )

    version = train_and_register(TrainConfig.from_dict(config), Path(data), progress=log_epoch)
    return version.version


@task
def evaluate_on_test(version: str, data: str, out_dir: str) -> EvaluationOutcome:
    """Evaluate one version on the dataset's test split; the report goes to ``out_dir``."""
    return evaluate_version(version, Path(data), TEST_SPLIT, out_dir=Path(out_dir))


@task(retries=2, retry_delay_seconds=[2, 10])
def record_evaluation(evaluation: str, rows: list[dict[str, Any]], results_dir: str) -> str:
    """Write the evaluation's rows to the ``evaluations`` table (retried: disk hiccups pass)."""
    return str(write_evaluation(evaluation, rows, Path(results_dir)))


def png_data_uri(path: Path) -> str:
    """A PNG as a ``data:`` URI: the Prefect 3.9 UI renders these inside Markdown artifacts."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def plots_markdown(outcomes: Sequence[tuple[str, EvaluationOutcome]]) -> str:
    """A Markdown table of the report plots, one column per (label, outcome)."""
    header = "| Plot | " + " | ".join(label for label, _ in outcomes) + " |"
    lines = [header, "|---|" + "---|" * len(outcomes)]
    for caption, field in PLOTS:
        cells = [
            f"![{caption} {label}]({png_data_uri(getattr(outcome.report, field))})"
            for label, outcome in outcomes
        ]
        lines.append(f"| {caption} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _decide(
    promote: bool,
    challenger: str,
    champion: EvaluationOutcome | None,
    candidate: EvaluationOutcome,
) -> PromotionDecision:
    champion_metrics = None if champion is None else champion.recorded_metrics()
    if promote:
        return ModelRegistry().promote(challenger, champion_metrics, candidate.recorded_metrics())
    settings = get_settings()
    rule = should_promote(
        champion_metrics,
        candidate.recorded_metrics(),
        settings.promotion_min_qwk_gain,
        settings.promotion_max_auc_loss,
    )
    return PromotionDecision(False, f"promotion disabled (promote=False); the rule: {rule.reason}")


def _markdown(
    evaluation: str,
    data: Path,
    outcomes: dict[str, EvaluationOutcome],
    decision: PromotionDecision,
) -> str:
    challenger = outcomes["challenger"]
    champion = outcomes.get("champion")
    verdict = "promoted" if decision.promote else "not promoted"
    return "\n".join(
        [
            f"# Retrain: challenger {challenger.version} {verdict}",
            "",
            f"**Decision:** {decision.reason}",
            "",
            f"Test set: `{data}` split `{TEST_SPLIT}`, {challenger.metrics.n_samples} images, "
            f"data fingerprint `{challenger.dataset_fingerprint[:12]}`; "
            f"champion: {champion.version if champion else 'none'}; evaluation `{evaluation}`.",
            "",
            comparison_table(
                {} if champion is None else champion.metrics.to_dict(),
                challenger.metrics.to_dict(),
            ),
            "## Plots",
            "",
            plots_markdown([(f"{role} {o.version}", o) for role, o in outcomes.items()]),
        ]
    )


@flow(name="retrain")
def retrain(
    data: str | None = None,
    epochs: int = 3,
    promote: bool = True,
    seed: int = 0,
    loss: Literal["ce", "ordinal"] = "ordinal",
    input_size: int | None = None,
    width: int | None = None,
    depth: list[int] | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Train a challenger and promote it only if it beats the champion on the same test set.

    Both models are evaluated on the ``test`` split of ``data``; the registry's rule
    (``koa_core.registry.store.should_promote``) decides. Every model's metrics go to the
    ``evaluations`` Parquet table under ``$KOA_HOME/results/evaluations``; a Markdown
    artifact shows the metrics side by side, the decision and the plots.

    Args:
        data: Labelled dataset folder (default ``$KOA_HOME/datasets/kl``).
        epochs: Training epochs (early stopping may end sooner).
        promote: Apply the decision; ``False`` only reports what the rule would do.
        seed: Training seed.
        loss: ``ordinal`` or ``ce``.
        input_size: Model input side in pixels (default ``KOA_INPUT_SIZE``).
        width: Channels of the first stage (default ``TrainConfig``'s).
        depth: Residual blocks per stage (default ``TrainConfig``'s).
        batch_size: Training batch size (default ``TrainConfig``'s).
    """
    settings = get_settings()
    logger = get_run_logger()
    root = Path(data) if data else default_data(settings)
    evaluation = evaluation_id()
    config = training_config(
        epochs=epochs,
        seed=seed,
        loss=loss,
        input_size=input_size or settings.input_size,
        width=width,
        depth=tuple(depth) if depth else None,
        batch_size=batch_size,
    )
    current = ModelRegistry().champion()
    challenger = train_challenger(config.to_dict(), str(root))
    reports = settings.home / "evaluations" / evaluation
    outcomes: dict[str, EvaluationOutcome] = {}
    if current is not None:
        outcomes["champion"] = evaluate_on_test(
            current.version, str(root), str(reports / f"champion-{current.version}")
        )
    outcomes["challenger"] = evaluate_on_test(
        challenger, str(root), str(reports / f"challenger-{challenger}")
    )
    decision = _decide(promote, challenger, outcomes.get("champion"), outcomes["challenger"])
    logger.info("challenger %s: %s", challenger, decision.reason)
    now = datetime.now(UTC)
    rows = [
        evaluation_row(
            outcome,
            evaluation_id=evaluation,
            evaluated_at=now,
            role=role,
            promoted=decision.promote and role == "challenger",
            reason=decision.reason,
        )
        for role, outcome in outcomes.items()
    ]
    table = record_evaluation(evaluation, rows, str(settings.results_dir))
    create_markdown_artifact(
        _markdown(evaluation, root, outcomes, decision),
        key="retrain-comparison",
        description=f"Champion vs challenger {challenger} on {root.name}/{TEST_SPLIT}",
    )
    return {
        "evaluation_id": evaluation,
        "champion": current.version if current else None,
        "challenger": challenger,
        "promoted": decision.promote,
        "reason": decision.reason,
        "metrics": {role: o.metrics.to_dict() for role, o in outcomes.items()},
        "evaluations_file": table,
    }
