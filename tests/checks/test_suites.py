"""Tests for the suite JSON files in data_checks/suites and their loading as GX suites."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from data_checks import runner
from data_checks.runner import SUITES_DIR, SuiteError, load_suite
from koa_core.config import Settings, get_settings

REASON_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


def suite_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SUITES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return data


def test_every_suite_file_is_a_known_suite() -> None:
    assert sorted(path.stem for path in SUITES_DIR.glob("*.json")) == sorted(runner.SUITE_NAMES)


@pytest.mark.parametrize("name", runner.SUITE_NAMES)
def test_suite_loads_as_gx_suite_with_every_expectation(name: str) -> None:
    import great_expectations as gx

    suite = load_suite(name)
    entries = suite_json(name)["expectations"]
    assert isinstance(suite, gx.ExpectationSuite)
    assert suite.name == name
    assert [e.expectation_type for e in suite.expectations] == [e["type"] for e in entries]


@pytest.mark.parametrize("name", runner.SUITE_NAMES)
def test_every_expectation_has_a_reason_code(name: str) -> None:
    for expectation in load_suite(name).expectations:
        assert REASON_CODE.match(expectation.meta.get("reason", "")), expectation


@pytest.mark.parametrize("name", runner.SUITE_NAMES)
def test_settings_overrides_name_real_settings_fields(name: str) -> None:
    for entry in suite_json(name)["expectations"]:
        for kwarg, field in entry.get("meta", {}).get("settings", {}).items():
            assert kwarg in entry["kwargs"]
            assert field in Settings.model_fields


def test_settings_override_the_json_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOA_MIN_IMAGE_PX", "300")
    monkeypatch.setenv("KOA_MAX_IMAGE_PX", "4000")
    get_settings.cache_clear()
    rows = next(
        e for e in load_suite("manifest").expectations if e.meta["reason"] == "rows_out_of_range"
    )
    assert (rows.min_value, rows.max_value) == (300, 4000)


def test_keep_first_by_only_on_uniqueness() -> None:
    for name in runner.SUITE_NAMES:
        for entry in suite_json(name)["expectations"]:
            if "keep_first_by" in entry["meta"]:
                assert entry["type"] == "expect_column_values_to_be_unique"


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "expect_column_values_to_be_betwixt", "kwargs": {"column": "a"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"colum": "a"}},
    ],
    ids=["unknown_type", "bad_kwarg"],
)
def test_invalid_expectation_raises_instead_of_being_dropped(
    entry: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = {"name": "manifest", "expectations": [{**entry, "meta": {"reason": "x"}}]}
    (tmp_path / "manifest.json").write_text(json.dumps(suite), encoding="utf-8")
    monkeypatch.setattr(runner, "SUITES_DIR", tmp_path)
    with pytest.raises(SuiteError, match="invalid expectation"):
        load_suite("manifest")
