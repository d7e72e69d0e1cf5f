"""The ``koa`` command for people: phantoms, inspect and preview, through typer's runner."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from koa_core.cli.app import app, demo_query
from koa_core.io.reader import read_radiograph

runner = CliRunner()
PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _koa(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def nightly_batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    _koa(
        "phantoms",
        "--out",
        str(out),
        "--n",
        "200",
        "--format",
        "dicom",
        "--batch-date",
        "2026-11-27",
        "--size-px",
        "256,320",
        "--seed",
        "3",
    )
    return out


def test_phantom_dicoms_read_back_with_their_grade_and_laterality(nightly_batch: Path) -> None:
    with (nightly_batch / "2026-11-27.labels.csv").open() as handle:
        labels = list(csv.DictReader(handle))
    assert len(labels) == 200
    assert {row["kl_grade"] for row in labels} == {"0", "1", "2", "3", "4"}
    for row in labels:
        path = nightly_batch / row["file"]
        radiograph = read_radiograph(path)
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        assert dataset.ImageComments == f"KL={row['kl_grade']}"
        assert radiograph.meta.laterality == row["laterality"]
        assert radiograph.meta.sop_instance_uid == row["sop_instance_uid"]


def test_inspect_gives_one_row_per_file_with_a_named_reason(tmp_path: Path) -> None:
    out = tmp_path / "batch"
    _koa(
        "phantoms",
        "--out",
        str(out),
        "--n",
        "3",
        "--bad",
        "4",
        "--batch-date",
        "2026-11-27",
        "--size-px",
        "256,320",
    )
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix != ".csv")
    table = tmp_path / "inspect.csv"
    _koa("inspect", str(out / "2026-11-27"), "--csv", str(table))
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(row["file"]) for row in rows) == files
    statuses = {Path(row["file"]).name: row["status"] for row in rows}
    assert sum(status == "ok" for status in statuses.values()) >= 3
    assert any(s.startswith("truncated:") for s in statuses.values())
    assert any(s.startswith("empty_file:") for s in statuses.values())


def test_inspect_gives_every_pydicom_test_file_a_row(tmp_path: Path) -> None:
    files = sorted(p for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file())
    table = tmp_path / "inspect.csv"
    _koa("inspect", "--no-decode", str(PYDICOM_TEST_FILES), "--csv", str(table))
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["file"]) for row in rows] == files
    assert all(row["status"] for row in rows)


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_preview_writes_the_model_input(
    nightly_batch: Path, tmp_path: Path, laterality: str
) -> None:
    source = next(
        p
        for p in sorted(nightly_batch.rglob("*.dcm"))
        if pydicom.dcmread(p, stop_before_pixels=True).ImageLaterality == laterality
    )
    out = tmp_path / "preview.png"
    output = _koa("preview", str(source), "--out", str(out), "--roi", "--size", "128")
    image = np.asarray(Image.open(out))
    assert image.shape == (128, 128) and image.dtype == np.uint8
    assert image.std() > 10
    assert f"mirrored: {laterality == 'L'}" in output


def test_preview_without_a_size_shows_what_the_champion_is_fed(
    nightly_batch: Path, tmp_path: Path
) -> None:
    from tests.flows.models import register_tiny_champion

    register_tiny_champion(96)
    out = tmp_path / "preview.png"
    _koa("preview", str(next(nightly_batch.rglob("*.dcm"))), "--out", str(out), "--roi")
    assert np.asarray(Image.open(out)).shape == (96, 96)


@pytest.mark.parametrize("folder", ["plain", "with space", "odd $HOME `x` \"q\" 'a'"])
def test_demo_query_runs_as_printed_from_anywhere(tmp_path: Path, folder: str) -> None:
    from tests.core.storage.test_results import DAY1, write_scores

    results = tmp_path / folder / "results"
    write_scores(results, DAY1, 4, tag="a")
    query = demo_query(results, DAY1)
    printed = subprocess.run(
        query, shell=True, cwd="/", capture_output=True, text=True, timeout=60, check=False
    )
    assert printed.returncode == 0, printed.stderr
    knees = [row.split("│")[2] for row in printed.stdout.splitlines() if row.count("│") == 5]
    assert sum(int(cell) for cell in knees if cell.strip().isdigit()) == 4


def test_score_without_a_champion_localizer_stops_before_reading_any_file(
    koa_home: Path,
) -> None:
    from koa_core.phantom import write_nightly_films

    write_nightly_films(koa_home / "incoming", 1, seed=3, batch_date=date(2026, 11, 30))
    child = subprocess.run(
        [sys.executable, "-m", "koa_core", "score", "--batch-date", "2026-11-30"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 2
    (line,) = [text for text in child.stderr.splitlines() if text.strip()]
    assert "no champion localizer" in line and "koa train-localizer" in line
    assert not (koa_home / "runs").exists() and not (koa_home / "logs").exists()


def test_preview_of_a_bilateral_film_draws_both_knees(
    tmp_path: Path, champion_localizer: str
) -> None:
    from koa_core.phantom import film_dataset, render_film, save_dicom
    from tests.flows.models import register_tiny_champion

    register_tiny_champion(64)
    film = render_film("bilateral", 8, spacing_mm=0.6)
    ds = film_dataset(film, key=("preview",), patient_id="P8", study_date=date(2026, 11, 30))
    save_dicom(ds, tmp_path / "film.dcm")
    out = tmp_path / "preview.png"
    output = _koa("preview", str(tmp_path / "film.dcm"), "--out", str(out))
    assert "R knee: KL" in output and "L knee: KL" in output
    picture = np.asarray(Image.open(out))
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0] * 0.8
