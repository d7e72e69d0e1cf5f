"""The retrain flow: train a challenger, test it and the champion on one test set, maybe promote."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.model_reports import default_data, evaluation_id, plots_markdown, record_evaluation
from koa_core.config import get_settings
from koa_core.evaluation.evaluate import TEST_SPLIT, EvaluationOutcome
from koa_core.evaluation.report import comparison_table
from koa_core.evaluation.rows import evaluation_row
from koa_core.training.config import TrainConfig
from koa_core.training.loop import EpochStats
from koa_core.workflows import challenger as workflow

# The UI shows these defaults in the run form: the recipe `koa train` uses.
RECIPE = TrainConfig()


def training_config(**values: Any) -> TrainConfig:
    """A ``TrainConfig`` from the flow's parameters; ``None`` keeps the default."""
    return TrainConfig(**{name: value for name, value in values.items() if value is not None})


@task
def train_challenger(config: dict[str, Any], data: str) -> EvaluationOutcome:
    """Train, register and evaluate a challenger on val and test; returns its test evaluation.

    Never promotes: ``decide_promotion`` does, on this evaluation.
    """
    logger = get_run_logger()

    def log_epoch(stats: EpochStats) -> None:
        logger.info("epoch %d/%d: %s", stats.epoch, stats.epochs, stats.summary())

    trained = workflow.train_challenger(
        TrainConfig.from_dict(config), Path(data), progress=log_epoch
    )
    return trained.tested()


@task
def decide_promotion(
    challenger: EvaluationOutcome, data: str, promote: bool
) -> workflow.PromotionOutcome:
    """The champion's test metrics on the same dataset (re-evaluated only if needed), the rule.

    With ``promote=False`` the rule's verdict is reported and nothing moves or is logged.
    """
    return workflow.promote_challenger(challenger, Path(data), apply=promote)


def _markdown(evaluation: str, data: Path, outcome: workflow.PromotionOutcome) -> str:
    challenger, champion, record = outcome.challenger, outcome.champion, outcome.record
    verdict = "promoted" if record.promoted else "not promoted"
    labelled = [(f"{role} {o.version}", o) for role, o in _roles(outcome).items()]
    return "\n".join(
        [
            f"# Retrain: challenger {challenger.version} {verdict}",
            "",
            f"**Decision:** {record.reason}",
            "",
            f"Test set: `{data}` split `{TEST_SPLIT}`, {challenger.metrics.n_samples} images, "
            f"data fingerprint `{challenger.dataset_fingerprint[:12]}`; "
            f"champion: {record.champion or 'none'}; evaluation `{evaluation}`.",
            "",
            comparison_table(
                {} if champion is None else champion.metrics.to_dict(),
                challenger.metrics.to_dict(),
            ),
            "## Plots",
            "",
            plots_markdown(labelled),
        ]
    )


def _roles(outcome: workflow.PromotionOutcome) -> dict[str, EvaluationOutcome]:
    roles = {} if outcome.champion is None else {"champion": outcome.champion}
    return {**roles, "challenger": outcome.challenger}


def _rows(evaluation: str, outcome: workflow.PromotionOutcome) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        evaluation_row(
            tested,
            evaluation_id=evaluation,
            evaluated_at=now,
            role=role,
            promoted=outcome.promoted and role == "challenger",
            reason=outcome.record.reason,
        )
        for role, tested in _roles(outcome).items()
    ]


@flow(name="retrain")
def retrain(
    data: str | None = None,
    epochs: int = RECIPE.epochs,
    promote: bool = True,
    seed: int = 0,
    loss: Literal["ce", "ordinal"] = RECIPE.loss,
    input_size: int | None = None,
    width: int | None = None,
    depth: list[int] | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Train a challenger and promote it only if the promotion rule says so.

    The challenger is evaluated once on the ``test`` split of ``data``; the champion's
    recorded test metrics are reused when they come from the same dataset, else it is
    evaluated now. The registry's rule (``koa_core.registry.policy.should_promote``: a
    quality floor, then a QWK gain without an AUC loss) decides and the decision is logged
    in ``promotions.jsonl``. Every model's metrics go to the ``evaluations`` Parquet table
    under ``$KOA_HOME/results/evaluations``; a Markdown artifact shows the metrics side by
    side, the decision and the plots.

    Args:
        data: Labelled dataset folder (default ``$KOA_HOME/datasets/kl``).
        epochs: Length of the fixed schedule (``TrainConfig``'s by default).
        promote: Apply the decision; ``False`` only reports what the rule would do.
        seed: Training seed.
        loss: ``ce`` or ``ordinal`` (``TrainConfig``'s by default).
        input_size: Model input side in pixels (default ``KOA_INPUT_SIZE``).
        width: Channels of the first stage (default ``TrainConfig``'s).
        depth: Convolution blocks per stage (default ``TrainConfig``'s).
        batch_size: Training batch size (default ``TrainConfig``'s).
    """
    settings = get_settings()
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
    tested = train_challenger(config.to_dict(), str(root))
    outcome = decide_promotion(tested, str(root), promote)
    record = outcome.record
    get_run_logger().info("challenger %s: %s", record.challenger, record.reason)
    table = record_evaluation(evaluation, _rows(evaluation, outcome), str(settings.results_dir))
    create_markdown_artifact(
        _markdown(evaluation, root, outcome),
        key="retrain-comparison",
        description=f"Champion vs challenger {record.challenger} on {root.name}/{TEST_SPLIT}",
    )
    return {
        "evaluation_id": evaluation,
        "champion": record.champion,
        "challenger": record.challenger,
        "promoted": record.promoted,
        "reason": record.reason,
        "decision": record.to_dict(),
        "metrics": {role: o.metrics.to_dict() for role, o in _roles(outcome).items()},
        "evaluations_file": table,
    }
