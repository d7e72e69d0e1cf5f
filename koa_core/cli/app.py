"""The ``koa`` command: make phantoms, inspect and preview radiographs, train, evaluate, score."""

from __future__ import annotations

import gc
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from koa_core.cli.delivery import deliver_command
from koa_core.cli.localizer import promote_localizer_command, train_localizer_command
from koa_core.cli.models import evaluate_command, models_app, train_command
from koa_core.cli.progress import progress_bar

app = typer.Typer(help="koa: nightly knee-osteoarthritis (KL grade) scoring of knee radiographs.")
console = Console(stderr=True)
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("train-localizer")(train_localizer_command)
app.command("promote-localizer")(promote_localizer_command)
app.add_typer(models_app, name="models")
app.command("deliver")(deliver_command)


def _say(text: str) -> None:
    # One line per step, never wrapped: its paths are for copying.
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def _yesterday() -> date:
    return date.today() - timedelta(days=1)


@app.command()
def phantoms(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    n: Annotated[int, typer.Option(help="Number of radiographs.", min=1)] = 20,
    file_format: Annotated[str, typer.Option("--format", help="dicom or png.")] = "dicom",
    layout: Annotated[str, typer.Option(help="nightly or kl-folders.")] = "nightly",
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same images.")] = 0,
    batch_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD (nightly layout).")] = None,
    bad: Annotated[int, typer.Option(help="Bad files to mix in (nightly layout).", min=0)] = 0,
    label_noise: Annotated[float, typer.Option(help="Adjacent-grade flip rate.")] = 0.0,
    size_px: Annotated[
        str | None, typer.Option(help="Image side range MIN,MAX in pixels (default: realistic).")
    ] = None,
    film: Annotated[
        str | None,
        typer.Option(help="Whole films instead: bilateral, unilateral, lateral or mixed."),
    ] = None,
    spacing_mm: Annotated[
        float | None, typer.Option(help="Detector spacing of films (default: 0.1-0.2 mm).")
    ] = None,
    difficulty: Annotated[
        str | None, typer.Option(help="normal, hard or harder (kl-folders layout).")
    ] = None,
) -> None:
    """Write synthetic knee radiographs with known KL grades.

    With --film: whole films and OUT/labels.csv (one row per knee), or with --batch-date a
    night of films under OUT/YYYY-MM-DD/ and its truth in OUT/YYYY-MM-DD.films.csv.
    """
    from koa_core import phantom

    if film is not None:
        _phantom_films(out, n, film, seed, batch_date, spacing_mm, label_noise)
        return
    if layout not in ("nightly", "kl-folders"):
        raise typer.BadParameter("layout must be 'nightly' or 'kl-folders'", param_hint="--layout")
    if file_format not in ("dicom", "png"):
        raise typer.BadParameter("format must be 'dicom' or 'png'", param_hint="--format")
    if difficulty is not None and difficulty not in phantom.DIFFICULTIES:
        names = ", ".join(phantom.DIFFICULTIES)
        raise typer.BadParameter(f"difficulty must be one of {names}", param_hint="--difficulty")
    sizes = {"size_px": _size_range(size_px)} if size_px else {}
    with progress_bar(console) as progress:
        task = progress.add_task("phantoms", total=n + (bad if layout == "nightly" else 0))

        def advance(count: int = 1) -> None:
            progress.advance(task, count)

        if layout == "nightly":
            day = date.fromisoformat(batch_date) if batch_date else _yesterday()
            records = phantom.write_nightly_batch(
                out, n, seed, day, file_format=file_format, bad=bad, progress=advance, **sizes
            )
        else:
            records = phantom.write_kl_folders(
                out,
                n,
                seed,
                file_format=file_format,
                label_noise=label_noise,
                progress=advance,
                difficulty=difficulty,
                **sizes,
            )
    console.print(f"wrote {len(records)} files under {out}")


def _phantom_films(
    out: Path,
    n: int,
    kind: str,
    seed: int,
    batch_date: str | None,
    spacing_mm: float | None,
    label_noise: float,
) -> None:
    """``koa phantoms --film``: whole films, as a labelled set or as one night's batch."""
    from koa_core import phantom

    if kind not in ("bilateral", "unilateral", "lateral", "mixed"):
        raise typer.BadParameter(
            "film must be bilateral, unilateral, lateral or mixed", param_hint="--film"
        )
    with progress_bar(console) as progress:
        task = progress.add_task("films", total=n)

        def advance(count: int = 1) -> None:
            progress.advance(task, count)

        if batch_date:
            day = date.fromisoformat(batch_date)
            records = phantom.write_nightly_films(
                out,
                n,
                seed,
                day,
                kind,
                spacing_mm=spacing_mm,
                label_noise=label_noise,
                progress=advance,
            )
        else:
            records = phantom.write_films(
                out,
                n,
                kind,
                seed,
                spacing_mm=spacing_mm,
                label_noise=label_noise,
                progress=advance,
            )
    knees = sum(len(record.knees) for record in records)
    console.print(f"wrote {len(records)} films ({knees} knees) under {out}")


def _size_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            "expected MIN,MAX, e.g. 1024,2500", param_hint="--size-px"
        ) from None
    return low, high


def _expand(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
    decode: Annotated[bool, typer.Option(help="Also decode the pixels.")] = True,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write the rows here.")] = None,
) -> None:
    """One row per file: its metadata, or the named reason it cannot be used."""
    from rich.table import Table

    from koa_core.io.inspection import COLUMNS, inspect_file, write_csv

    rows = [inspect_file(path, decode=decode) for path in _expand(paths)]
    table = Table(*COLUMNS)
    for row in rows:
        table.add_row(*row.cells())
    Console().print(table)
    if csv_out:
        write_csv(rows, csv_out)
    unusable = sum(row.status != "ok" for row in rows)
    console.print(f"{len(rows)} file(s), {unusable} cannot be used")


@app.command()
def preview(
    path: Annotated[Path, typer.Argument(help="A DICOM, PNG, JPEG or TIFF file.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")],
    roi: Annotated[
        bool, typer.Option("--roi", help="The file is one knee's ROI (a public-dataset crop).")
    ] = False,
    size: Annotated[
        int | None, typer.Option(help="With --roi: input size (default: the champion's).")
    ] = None,
) -> None:
    """Draw what koa finds on a film: each joint, its ROI box, side, grade, P(KOA), heatmap
    and prediction set, with the ROIs as the grader sees them beside it (champion models)."""
    if roi:
        from koa_core.io.inspection import write_preview

        console.print(f"wrote {out} ({write_preview(path, out, size or _champion_input_size())})")
        return
    from koa_core.workflows.preview import preview_film

    shown = preview_film(path, out)
    _say(f"wrote {out}: {shown.summary()}")


def _champion_input_size() -> int | None:
    """The champion's input size: a preview shows what the serving model is fed."""
    from koa_core.registry import ModelRegistry

    champion = ModelRegistry().champion()
    return None if champion is None else champion.model_card().input_size


def main() -> None:
    """Entry point of ``koa`` and ``python -m koa_core``: koa's own errors end in one line."""
    from koa_core.errors import KoaError

    try:
        app()
    except KoaError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise SystemExit(2) from None
    finally:
        # The process ends here. Its last garbage collections walk every object torch,
        # Prefect and Dask made: 5-7 s on a busy 2-core machine, 0.7 s frozen (measured).
        # atexit handlers still run; objects are still freed by reference counting.
        gc.freeze()


@contextmanager
def _logged(command: str) -> Iterator[Path]:
    """Full logs to ``$KOA_HOME/logs/<command>-<time>.log``; the terminal keeps warnings."""
    from flows.local_run import log_to_file
    from koa_core.config import get_settings
    from koa_core.errors import KoaError

    log_file = log_to_file(get_settings().home, command, console)
    try:
        yield log_file
    except KoaError:
        console.print(f"log: {log_file}")
        raise


@app.command()
def score(
    source: Annotated[str | None, typer.Option(help="Folder, fsspec URL or DICOMweb URL.")] = None,
    batch_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: yesterday).")] = None,
    model: Annotated[str, typer.Option(help="champion, latest or a version id.")] = "champion",
) -> None:
    """Run the nightly scoring flow on one batch and print where the results are."""
    from flows.local_run import run_nightly_with_progress
    from koa_core.registry import champion_localizer

    day = date.fromisoformat(batch_date) if batch_date else _yesterday()
    champion_localizer()  # stops here, in one line, before any file is read
    with _logged("score") as log_file:
        summary = run_nightly_with_progress(day, source, model, console)
    _print_summary(summary, log_file)


@app.command()
def demo() -> None:
    """The main job end to end on embedded defaults: batch, model if none, nightly flow."""
    from flows.local_run import run_nightly_with_progress
    from koa_core.config import get_settings
    from koa_core.workflows.demo import ensure_champion, ensure_demo_batch, ensure_localizer

    settings = get_settings()
    day = _yesterday()
    with _logged("demo") as log_file:
        ensure_demo_batch(settings, day, _say)
        ensure_localizer(settings, _say)
        ensure_champion(settings, _say)
        _say(f"scoring the night of {day}: nightly flow on a local Dask cluster")
        summary = run_nightly_with_progress(day, None, "champion", console)
    _print_summary(summary, log_file)
    typer.echo(f"\nQuery the night with duckdb:\n  {demo_query(settings.results_dir, day)}")


def demo_query(results_dir: Path, day: date) -> str:
    """A shell command that prints the night's grades with duckdb, runnable as printed.

    It names this interpreter (the one with duckdb installed) and the scores table by
    absolute path, so it works from any directory.
    """
    scores = str((results_dir / "scores").resolve()).replace("'", "''")
    sql = (
        "select kl_grade, count(*) as knees, count(distinct source_path) as films,"
        " round(avg(p_koa), 3) as mean_p_koa "
        f"from read_parquet('{scores}/**/*.parquet') "
        f"where batch_date = DATE '{day.isoformat()}' group by 1 order by 1"
    )
    code = f"import duckdb; duckdb.sql({sql!r}).show()"
    return f"{shlex.quote(sys.executable)} -c {_double_quoted(code)}"


def _double_quoted(text: str) -> str:
    # Inside "...", a POSIX shell still expands $, ` and \ and ends at ": escape exactly those.
    escaped = "".join(f"\\{ch}" if ch in '$`"\\' else ch for ch in text)
    return f'"{escaped}"'


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; beyond loopback needs KOA_SERVER_AUTH.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Server and UI port.")] = 4200,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the UI.")] = False,
) -> None:
    """Run the local Prefect server, work pool, deployments and a worker until Ctrl-C.

    Off loopback the server requires basic auth: KOA_SERVER_AUTH=user:password (or
    PREFECT_SERVER_API_AUTH_STRING) in the environment, a password of 12 characters or more.
    """
    from deployments.serve import serve as run_service
    from koa_core.config import get_settings

    run_service(get_settings().home, host, port, open_browser)


def _print_summary(summary: dict[str, object], log_file: Path) -> None:
    from rich.table import Table

    table = Table("inputs", "films scored", "knees scored", "quarantined", "model", "status")
    keys = ("n_inputs", "n_films_scored", "n_scored", "n_quarantined", "model_version", "status")
    table.add_row(*(str(summary[key]) for key in keys))
    Console().print(table)
    typer.echo(f"results: {summary['results_dir']}\nlog: {log_file}")
