"""Behaviour pin: a small night gives the rows the pre-regroup code wrote (golden_night.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from koa_core.config import get_settings
from koa_core.pipeline.source_paths import PATH_MAP_FILE, read_path_map
from koa_core.privacy import pseudonymise
from tests.flows import golden_night as golden
from tests.flows.models import register_tiny_champion

pytestmark = pytest.mark.usefixtures("prefect_api")
# P(KOA) is clipped to [0, 1] since the regroup, and float32 rounding moves the 5th decimal.
TOLERANCE = 1e-5
# The fixture's patient keys were made with the public default secret koa had then; the
# code has no default any more, so the test sets that one.
FIXTURE_SECRET = "koa-default-site-secret-change-me"
# write_night's knees: seed 31, each in a folder named after its PatientID.
KNEE_FOLDER_PREFIX = "KOA31-"


def _run(dask_cluster: str) -> dict[str, Any]:
    from prefect_dask import DaskTaskRunner

    from flows.nightly import nightly_scoring

    flow = nightly_scoring.with_options(task_runner=DaskTaskRunner(address=dask_cluster))
    return flow(batch_date=golden.BATCH_DATE)


def _numbers_apart(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> list[str]:
    """Each (row, column) whose value differs from the fixture by more than ``TOLERANCE``."""
    return [
        f"{want['source']}.{name}: {got[name]} != {want[name]}"
        for got, want in zip(actual, expected, strict=True)
        for name in golden.SCORE_FLOAT_COLUMNS
        if abs(got[name] - want[name]) > TOLERANCE
    ]


def _expected_source_path(name: str) -> str:
    """A phantom DICOM's folder is its PatientID, keyed in ``source_path``; PNGs carry no id."""
    folder, _, rest = name.partition("/")
    if folder.startswith(KNEE_FOLDER_PREFIX):
        return f"{pseudonymise(folder, FIXTURE_SECRET)}/{rest}"
    return name


def test_the_golden_night_scores_and_quarantines_as_before(
    koa_home: Path, monkeypatch: pytest.MonkeyPatch, dask_cluster: str
) -> None:
    monkeypatch.setenv("KOA_SITE_SECRET", FIXTURE_SECRET)
    monkeypatch.setenv("KOA_INPUT_SIZE", str(golden.INPUT_SIZE))
    monkeypatch.setenv("KOA_CHUNK_SIZE", str(golden.CHUNK_SIZE))
    get_settings.cache_clear()
    folder = golden.write_night(get_settings().incoming_dir)
    register_tiny_champion(golden.INPUT_SIZE, seed=golden.MODEL_SEED)
    expected = json.loads(golden.FIXTURE.read_text(encoding="utf-8"))

    summary = _run(dask_cluster)
    run_dir = get_settings().runs_dir / golden.BATCH_DATE.isoformat() / summary["run_id"]
    real_paths = read_path_map(run_dir / PATH_MAP_FILE)
    actual = golden.night_rows(get_settings().results_dir, folder, real_paths)

    assert actual["quarantine"] == expected["quarantine"]
    assert actual["runs"] == expected["runs"]
    assert [row["source"] for row in actual["scores"]] == [
        row["source"] for row in expected["scores"]
    ]
    exact = ("source", *golden.SCORE_TEXT_COLUMNS)
    assert [{n: row[n] for n in exact} for row in actual["scores"]] == [
        {n: row[n] for n in exact} for row in expected["scores"]
    ]
    assert _numbers_apart(actual["scores"], expected["scores"]) == []
    assert summary["n_scored"] == len(expected["scores"])
    assert summary["n_quarantined"] == len(expected["quarantine"])
    # What the rows say instead of the real path: the name in the batch, the patient keyed.
    prefix = f"{folder.resolve()}/"
    named = {
        name: _expected_source_path(real.removeprefix(prefix)) for name, real in real_paths.items()
    }
    assert [name for name, expected_name in named.items() if name != expected_name] == []
