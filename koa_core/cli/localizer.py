"""The ``koa train-localizer`` command (registered in ``cli/app.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from koa_core.cli.models import clear_errors, err, mm, out
from koa_core.cli.progress import progress_bar

if TYPE_CHECKING:
    from rich.progress import Progress

    from koa_core.localize.train import EpochLog


def validation_table(metrics: dict[str, Any], title: str) -> Table:
    """A localizer's validation figures as a table."""
    table = Table("figure", "value", title=title)
    table.add_row("films / knees", f"{metrics['n_films']} / {metrics['n_knees']}")
    table.add_row("median joint-centre error", mm(metrics["median_error_mm"]))
    table.add_row("p99 joint-centre error", mm(metrics["p99_error_mm"]))
    accuracy = metrics["handedness_accuracy"]
    table.add_row("handedness accuracy", "n/a" if accuracy is None else f"{accuracy:.3f}")
    table.add_row("missed / invented knees", f"{metrics['missed']} / {metrics['invented']}")
    return table


def _epoch_progress(progress: Progress, epochs: int) -> Any:
    task = progress.add_task("training localizer", total=epochs, status="")

    def update(entry: EpochLog) -> None:
        median = entry.validation.median_error_mm
        status = f"loss {entry.loss:.3f}  val median {mm(median)}"
        progress.update(task, completed=entry.epoch, total=entry.epochs, status=status)

    return update


def train_localizer_command(
    data: Annotated[Path, typer.Option(help="Folder holding the films.")],
    labels: Annotated[
        Path | None, typer.Option(help="Joint-centre table CSV/Parquet (default DATA/labels.csv).")
    ] = None,
    promote: Annotated[bool, typer.Option(help="Make it champion if it meets the rule.")] = False,
    force: Annotated[
        bool, typer.Option(help="With --promote: make it champion without the rule (logged).")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 20).", min=1)] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of initialisation and augmentation.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Train a knee-joint localizer on films with labelled joints, register it, print its
    validation figures; ``--promote`` applies the localizer rule."""
    from koa_core.localize.train_config import LocalizerTrainConfig
    from koa_core.workflows.localizer import train_and_register_localizer

    given: dict[str, Any] = {"epochs": epochs, "seed": seed, "threads": threads}
    config = LocalizerTrainConfig(**{k: v for k, v in given.items() if v is not None})
    with clear_errors():
        with progress_bar(err, status=True, transient=True) as progress:
            outcome = train_and_register_localizer(
                data,
                config,
                labels=labels,
                promote=promote and not force,
                progress=_epoch_progress(progress, config.epochs),
            )
        if promote and force:
            from koa_core.registry.localizers import LocalizerRegistry

            LocalizerRegistry().force_champion(outcome.version)
            err.print(
                f"[bold yellow]warning:[/] localizer {outcome.version.version} made champion"
                " by --force, without the localizer rule"
            )
    version = outcome.version.version
    out.print(f"registered localizer version [bold]{version}[/]")
    out.print(validation_table(outcome.trained.validation, f"{version} on its validation films"))
    record = outcome.promotion
    if record is not None:
        verdict = "[green]promoted[/]" if record.promoted else "[yellow]not promoted[/]"
        out.print(f"{version}: {verdict}: {escape(record.reason)}", soft_wrap=True)


def promote_localizer_command(
    ref: Annotated[str, typer.Argument(help="Localizer version id, latest or a directory.")],
    force: Annotated[bool, typer.Option(help="Make it champion without the rule.")] = False,
) -> None:
    """Make a registered localizer champion by the localizer rule, or ``--force`` it (logged)."""
    from koa_core.registry.localizers import LocalizerRegistry

    with clear_errors():
        registry = LocalizerRegistry()
        if force:
            version = registry.force_champion(ref)
            err.print(
                f"[bold yellow]warning:[/] localizer {version.version} made champion by"
                " --force, without the localizer rule"
            )
            return
        record = registry.promote(ref)
    verdict = "[green]promoted[/]" if record.promoted else "[yellow]not promoted[/]"
    out.print(f"localizer {record.challenger}: {verdict}: {escape(record.reason)}", soft_wrap=True)
