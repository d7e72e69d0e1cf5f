"""``koa train-localizer`` and ``koa promote-localizer`` on phantom films and hand-made ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from koa_core.cli.app import app
from koa_core.phantom.film_writers import write_films
from koa_core.registry import ModelRegistry
from koa_core.registry.localizers import LocalizerRegistry
from tests.core.localize.handmade import write_handmade_set

runner = CliRunner()
QUICK = ["--epochs", "2", "--threads", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def phantom_films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten ``write_films`` films with their labels.csv."""
    root = tmp_path_factory.mktemp("films")
    write_films(root, 10, "mixed", 5, spacing_mm=0.6)
    return root


@pytest.fixture(scope="module")
def handmade_films(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Eight films koa's film writer never made, a blank one, and their joint table."""
    return write_handmade_set(tmp_path_factory.mktemp("handmade"), 8, seed=7)


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_train_localizer_on_phantom_films_registers_and_applies_the_rule(
    phantom_films: Path,
) -> None:
    output = _invoke("train-localizer", "--data", str(phantom_films), "--promote", *QUICK)
    registry = LocalizerRegistry()
    (version,) = registry.list_versions()
    assert f"registered localizer version {version.version}" in output
    assert "median joint-centre error" in output and "missed / invented knees" in output
    (decision,) = registry.promotions()
    assert decision["challenger"] == version.version
    # Two optimiser steps cannot meet the rule: the refusal is printed and logged.
    assert "not promoted" in output and decision["promoted"] is False
    assert registry.champion() is None
    assert version.document["hyperparameters"]["epochs"] == 2
    assert version.document["hyperparameters"]["seed"] == 3


def test_force_promotion_is_logged_and_leaves_the_grader_alone(phantom_films: Path) -> None:
    _invoke("train-localizer", "--data", str(phantom_films), *QUICK)
    registry = LocalizerRegistry()
    (version,) = registry.list_versions()
    result = runner.invoke(app, ["promote-localizer", version.version, "--force"])
    assert result.exit_code == 0, result.output
    assert "made champion by --force" in result.output
    assert registry.champion() == version
    (line,) = registry.promotions()
    assert line["forced"] is True
    assert ModelRegistry().champion() is None and ModelRegistry().promotions() == []
    listing = _invoke("models", "list")
    assert "localizers (* champion)" in listing and version.version in listing


def test_a_bad_table_is_one_line_naming_row_and_column(
    handmade_films: tuple[Path, Path], tmp_path: Path
) -> None:
    scans, table = handmade_films
    lines = table.read_text().splitlines()
    lines[3] = lines[3].replace(",R,", ",X,").replace(",L,", ",X,")
    assert ",X," in lines[3]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["train-localizer", "--data", str(scans), "--labels", str(bad)])
    assert result.exit_code == 2
    assert "bad.csv row 4, column side: 'X' is not R or L" in result.output
    assert "Traceback" not in result.output
    assert LocalizerRegistry().list_versions() == []
