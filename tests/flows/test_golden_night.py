"""Behaviour pin: a small night gives the rows the pre-regroup code wrote (golden_night.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from koa_core.config import get_settings
from tests.flows import golden_night as golden
from tests.flows.models import register_tiny_champion

pytestmark = pytest.mark.usefixtures("prefect_api")
# P(KOA) is clipped to [0, 1] since the regroup, and float32 rounding moves the 5th decimal.
TOLERANCE = 1e-5
# The fixture's patient keys were made with the public default secret koa had then; the
# code has no default any more, so the test sets that one.
FIXTURE_SECRET = "koa-default-site-secret-change-me"


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
    actual = golden.night_rows(get_settings().results_dir, folder)

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
