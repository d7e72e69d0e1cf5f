"""What the model flows (retrain, evaluate) share: the default data, table rows, plot artifacts."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

from prefect import task
from prefect.runtime import flow_run

from koa_core.config import Settings
from koa_core.evaluation.evaluate import EvaluationOutcome
from koa_core.storage.evaluations import write_evaluation

DEFAULT_DATASET = "kl"
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


@task(retries=2, retry_delay_seconds=[2, 10])
def record_evaluation(evaluation: str, rows: list[dict[str, Any]], results_dir: str) -> str:
    """Write the evaluation's rows to the ``evaluations`` table (retried: disk hiccups pass)."""
    return str(write_evaluation(evaluation, rows, Path(results_dir)))


def png_data_uri(path: Path) -> str:
    """A PNG as a ``data:`` URI: the Prefect 3.9 UI renders these inside Markdown artifacts."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _plot_cell(caption: str, label: str, path: Path) -> str:
    # A champion compared on recorded metrics shows its earlier report, which may be gone.
    if not path.is_file():
        return f"{caption} {label}: report file gone ({path})"
    return f"![{caption} {label}]({png_data_uri(path)})"


def plots_markdown(outcomes: Sequence[tuple[str, EvaluationOutcome]]) -> str:
    """A Markdown table of the report plots, one column per (label, outcome)."""
    header = "| Plot | " + " | ".join(label for label, _ in outcomes) + " |"
    lines = [header, "|---|" + "---|" * len(outcomes)]
    for caption, field in PLOTS:
        cells = [
            _plot_cell(caption, label, getattr(outcome.report, field))
            for label, outcome in outcomes
        ]
        lines.append(f"| {caption} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
