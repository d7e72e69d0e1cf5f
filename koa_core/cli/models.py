"""The ``koa train``, ``koa evaluate`` and ``koa models`` commands (registered in ``cli.py``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from koa_core.cli.progress import progress_bar
from koa_core.errors import KoaError

if TYPE_CHECKING:
    from koa_core.data.datasets import KLDataset
    from koa_core.training.config import TrainConfig
    from koa_core.training.loop import EpochStats
    from koa_core.workflows.challenger import PromotionOutcome

# Exit status for a named koa error (unusable dataset, unknown model, corrupt weights).
ERROR_EXIT = 2

models_app = typer.Typer(help="List, show and promote registered model versions.")
out = Console()
err = Console(stderr=True)


@contextmanager
def clear_errors() -> Iterator[None]:
    """Turn a named koa error into one line on stderr and exit status 2, never a traceback."""
    try:
        yield
    except KoaError as error:
        # The message may hold user text (a version id, a path) that reads as Rich markup.
        message = escape(f"{type(error).__name__}: {error}")
        err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        raise typer.Exit(ERROR_EXIT) from None


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def metrics_table(metrics: Mapping[str, Any], title: str) -> Table:
    """The report's headline metrics (with 95 % intervals where computed) as a table."""
    from koa_core.evaluation.report import HEADLINES

    table = Table("metric", "value", "95 % CI", title=title)
    for row in HEADLINES:
        if not row.shown(metrics):
            continue
        interval = metrics.get(row.ci_key) if row.ci_key else None
        ci = "" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
        table.add_row(row.label, _fmt(metrics[row.key]), ci)
    return table


def _print_decision(outcome: PromotionOutcome) -> None:
    from koa_core.evaluation.report import comparison_table

    record = outcome.record
    if outcome.champion is not None:
        out.print(
            comparison_table(
                outcome.champion.metrics.to_dict(), outcome.challenger.metrics.to_dict()
            )
        )
    verdict = "[green]promoted[/]" if record.promoted else "[yellow]not promoted[/]"
    out.print(
        f"{record.challenger}: {verdict} (champion was {record.champion or 'none'}):"
        f" {escape(record.reason)}",
        soft_wrap=True,
    )


def _epoch_progress(progress: Progress, epochs: int) -> Any:
    task = progress.add_task("training", total=epochs, status="")

    def update(stats: EpochStats) -> None:
        status = stats.summary() + (" *" if stats.improved else "")
        progress.update(task, completed=stats.epoch, total=stats.epochs, status=status)

    return update


def _load_progress(progress: Progress) -> Any:
    task = progress.add_task("preprocessing", total=None, status="")

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


def _fit_budget(config: TrainConfig, dataset: KLDataset, budget_s: float) -> TrainConfig:
    """``config`` with as many epochs as fit ``budget_s`` on this machine (measured now)."""
    from dataclasses import replace

    from koa_core.training.budget import plan_epochs

    n_train = len(dataset.splits["train"].labels)
    n_val = len(dataset.splits["val"].labels) if "val" in dataset.splits else 0
    epochs = plan_epochs(config, n_train, n_val, budget_s)
    err.print(f"time budget {budget_s / 60:.1f} min: a fixed schedule of {epochs} epochs")
    return replace(config, epochs=epochs)


def _training_set(data: Path, labels: Path | None, config: Any, progress: Progress) -> Any:
    """Knee ROI files as they are, or, for a joint table with grades, the champion
    localizer's ROIs of the films it labels."""
    from koa_core.evaluation.evaluate import load_for_card
    from koa_core.workflows.film_dataset import is_film_table, load_film_dataset

    if labels is not None and is_film_table(labels):
        from koa_core.registry import champion_localizer

        localizer = champion_localizer()
        return load_film_dataset(data, labels, config.input_size, localizer.path)
    return load_for_card(data, config.card(), labels, _load_progress(progress))


def train_command(
    data: Annotated[Path, typer.Option(help="Dataset folder (image folders or labels table).")],
    labels: Annotated[Path | None, typer.Option(help="Labels CSV/Parquet for the dataset.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 16).", min=1)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation and shuffling.")] = None,
    loss: Annotated[str | None, typer.Option(help="ce (default) or ordinal.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run.")] = False,
    promote: Annotated[bool, typer.Option(help="Promote if it beats the champion.")] = False,
    input_size: Annotated[int | None, typer.Option(help="Input side in px (default 128).")] = None,
    width: Annotated[int | None, typer.Option(help="First-stage channels (default 16).")] = None,
    depth: Annotated[str | None, typer.Option(help="Convolutions per stage, e.g. 2,2,2,2.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step (default 32).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Training directory.")] = None,
    budget_minutes: Annotated[
        float | None,
        typer.Option(
            help="Fit the schedule's epochs to this many minutes (not with --epochs).", min=0.1
        ),
    ] = None,
) -> None:
    """Train a KL-grading model, register it, evaluate it on val and test; optionally promote."""
    from koa_core.training.config import TrainConfig
    from koa_core.workflows.challenger import promote_challenger, train_challenger

    started = time.monotonic()
    if budget_minutes is not None and epochs is not None:
        raise typer.BadParameter("give --epochs or --budget-minutes, not both")

    given: dict[str, Any] = {
        "epochs": epochs,
        "seed": seed,
        "loss": loss,
        "input_size": input_size,
        "width": width,
        "depth": None if depth is None else tuple(int(part) for part in depth.split(",")),
        "batch_size": batch_size,
        "lr": lr,
        "threads": threads,
    }
    try:
        config = TrainConfig(device=device, **{k: v for k, v in given.items() if v is not None})
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    with clear_errors():
        with progress_bar(err, status=True, transient=True, eta=True) as progress:
            dataset = _training_set(data, labels, config, progress)
            if budget_minutes is not None:
                config = _fit_budget(
                    config, dataset, budget_minutes * 60 - (time.monotonic() - started)
                )
            challenger = train_challenger(
                config,
                dataset,
                out_dir=out_dir,
                progress=_epoch_progress(progress, config.epochs),
                resume=resume,
            )
        version = challenger.version
        document = version.document
        out.print(
            f"registered model version [bold]{version.version}[/]: best val QWK"
            f" {challenger.best_val_qwk:.4f} at epoch"
            f" {document.get('best_epoch')} of {len(document.get('history', []))}"
        )
        for split, metrics in version.metrics.items():
            out.print(metrics_table(metrics, f"{version.version} on {split}"))
        if promote:
            outcome = promote_challenger(challenger.tested(), data, labels=labels, device=device)
            _print_decision(outcome)


def evaluate_command(
    model: Annotated[str, typer.Option(help="Version id, champion, latest or a directory.")],
    data: Annotated[Path, typer.Option(help="Dataset folder (image folders or labels table).")],
    split: Annotated[str, typer.Option(help="test, val or train.")] = "test",
    labels: Annotated[Path | None, typer.Option(help="Labels CSV/Parquet for the dataset.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder.")] = None,
) -> None:
    """Evaluate a registered model on a labelled dataset; write and name its report."""
    from koa_core.evaluation.evaluate import evaluate_version

    with clear_errors():
        outcome = evaluate_version(
            model, data, split, labels=labels, out_dir=out_dir, device=device
        )
    out.print(metrics_table(outcome.recorded_metrics(), f"{outcome.version} on {split}"))
    if outcome.temperature is not None:
        out.print(f"temperature (fitted on val): {outcome.temperature:.3f}")
    sets = outcome.metrics
    if sets.conformal_coverage is not None and sets.conformal_level is not None:
        out.print(
            f"prediction sets at {sets.conformal_level:.0%}: coverage"
            f" {sets.conformal_coverage:.3f}, mean size {sets.conformal_mean_set_size:.2f} grades"
        )
    out.print(f"report: {outcome.report.report_md}", soft_wrap=True)


@models_app.command("list")
def list_models() -> None:
    """Every registered version: creation time, test QWK and AUC(KL>=2), the champion marked."""
    from koa_core.registry import ModelRegistry

    with clear_errors():
        registry = ModelRegistry()
        champion = registry.champion()
        versions = registry.list_versions()
    table = Table("", title="model versions (* champion); QWK and AUC(KL>=2) on test")
    table.add_column("version", no_wrap=True)
    for name in ("created (UTC)", "QWK", "AUC"):
        table.add_column(name, no_wrap=True)
    for version in versions:
        test = version.metrics.get("test", {})
        is_champion = champion is not None and champion.version == version.version
        table.add_row(
            "*" if is_champion else "",
            version.version,
            version.created_at[:16].replace("T", " "),
            _fmt(test.get("qwk")),
            _fmt(test.get("auc_koa")),
        )
    out.print(table)
    if not versions:
        out.print("no model versions registered yet")
    with clear_errors():
        localizers = localizers_table()
    if localizers.row_count:
        out.print(localizers)


@models_app.command("show")
def show_model(
    ref: Annotated[str, typer.Argument(help="Version id, champion, latest or a directory.")],
) -> None:
    """The version's card.json, its ``metrics`` overlaid by those recorded since registration."""
    from koa_core.registry import ModelRegistry

    with clear_errors():
        version = ModelRegistry().get(ref)
    out.print_json(json.dumps({**version.document, "metrics": version.metrics}))


@models_app.command("promote")
def promote_model(
    ref: Annotated[str, typer.Argument(help="Version id, latest or a directory.")],
    data: Annotated[
        Path | None, typer.Option(help="Evaluate both models on this dataset's test split.")
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="Labels CSV/Parquet for the dataset.")] = None,
    force: Annotated[bool, typer.Option(help="Make it champion without the rule.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Promote a version by the rule (quality floor, beats the champion), or ``--force`` it."""
    from koa_core.registry import ModelRegistry
    from koa_core.workflows.challenger import promote_if_better

    with clear_errors():
        if force:
            version = ModelRegistry().force_champion(ref)
            err.print(
                f"[bold yellow]warning:[/] {version.version} made champion by --force,"
                " without the promotion rule"
            )
            return
        _print_decision(promote_if_better(ref, data, labels=labels, device=device))


def mm(value: Any) -> str:
    """A length in mm for a table, or n/a."""
    return "n/a" if value is None else f"{value:.2f} mm"


def localizers_table() -> Table:
    """Every registered localizer with its validation figures, the champion marked."""
    from koa_core.registry.localizers import LocalizerRegistry

    registry = LocalizerRegistry()
    champion = registry.champion()
    table = Table("", title="localizers (* champion), on their validation films")
    for name in ("version", "median", "p99", "hand.", "miss/inv"):
        table.add_column(name, no_wrap=True)
    for version in registry.list_versions():
        figures = version.metrics.get("validation", {})
        accuracy = figures.get("handedness_accuracy")
        table.add_row(
            "*" if champion is not None and champion.version == version.version else "",
            version.version,
            mm(figures.get("median_error_mm")),
            mm(figures.get("p99_error_mm")),
            "n/a" if accuracy is None else f"{accuracy:.3f}",
            f"{figures.get('missed', 'n/a')}/{figures.get('invented', 'n/a')}",
        )
    return table
