"""The grader trained on labelled films: knees cut where the champion localizer finds them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from koa_core.cli.app import app
from koa_core.config import get_settings
from koa_core.errors import DatasetError
from koa_core.phantom import write_films
from koa_core.registry import ModelRegistry, champion_localizer
from koa_core.workflows.film_dataset import is_film_table, load_film_dataset
from tests.localizer_fixtures import TEST_FILM_SPACING_MM


@pytest.fixture
def films(tmp_path: Path) -> Path:
    root = tmp_path / "films"
    write_films(root, 30, "mixed", seed=21, spacing_mm=TEST_FILM_SPACING_MM)
    return root


@pytest.mark.usefixtures("champion_localizer")
def test_knees_of_labelled_films_are_the_localizers_rois_with_their_grades(films: Path) -> None:
    table = films / "labels.csv"
    assert is_film_table(table)
    dataset = load_film_dataset(films, table, 64, champion_localizer().path)
    rows = table.read_text().splitlines()[1:]
    n_knees = sum(len(split.labels) for split in dataset.splits.values())
    assert n_knees + len(dataset.skipped) >= len(rows) - 2
    for split in dataset.splits.values():
        assert split.images.shape[1:] == (64, 64)
        sides = {path.rsplit("#", 1)[1] for path in split.paths}
        assert sides <= {"R", "L"}
    films_by_split = {
        name: {path.rsplit("#", 1)[0] for path in split.paths}
        for name, split in dataset.splits.items()
    }
    seen = [film for names in films_by_split.values() for film in names]
    assert len(seen) == len(set(seen))  # both knees of a film in one split


@pytest.mark.usefixtures("champion_localizer", "no_quality_floor")
def test_koa_train_on_a_joint_table_with_grades_registers_a_grader(films: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(films),
            "--labels",
            str(films / "labels.csv"),
            "--epochs",
            "1",
            "--input-size",
            "64",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    (version,) = ModelRegistry(get_settings().models_dir).list_versions()
    assert version.version in result.output


@pytest.mark.usefixtures("champion_localizer")
def test_too_few_films_for_every_split_is_a_named_error(tmp_path: Path) -> None:
    root = tmp_path / "few"
    write_films(root, 2, "bilateral", seed=22, spacing_mm=TEST_FILM_SPACING_MM)
    with pytest.raises(DatasetError, match="label more films"):
        load_film_dataset(root, root / "labels.csv", 64, champion_localizer().path)
