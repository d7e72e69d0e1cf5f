"""Committing a night: the three tables written, the batch verdict, the summary."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from koa_core.config import get_settings
from koa_core.pipeline.commit import batch_failure, commit_night
from koa_core.pipeline.ledger import AccountingError, NightLedger, RunContext
from koa_core.pipeline.source_paths import PATH_MAP_FILE, read_path_map
from koa_core.privacy import Redactor, site_secret
from koa_core.schema import PROBABILITY_COLUMNS
from koa_core.sources.listing import BatchListing, SourceFile
from koa_core.storage import results
from tests.knee_columns import prepared_knee

DAY = date(2026, 11, 21)
RUN = RunContext(DAY, "run-7", "v3", "f" * 64, "loc-1")
# Keys the flow's callers read from its result (koa score, local_run, tests, benchmarks).
SUMMARY_KEYS = {
    "batch_date",
    "run_id",
    "model_version",
    "n_inputs",
    "n_films_scored",
    "n_scored",
    "n_quarantined",
    "grades",
    "p_koa",
    "results_dir",
    "docs_path",
    "status",
    "failure",
}


def _ledger(n_files: int) -> NightLedger:
    settings = get_settings()
    files = tuple(SourceFile(Path(f"/in/{i}.dcm"), 1, f"/in/{i}.dcm") for i in range(n_files))
    listing = BatchListing("/in", DAY, files, root="/in/")
    return NightLedger(RUN, listing, settings, Redactor(site_secret(settings)))


def _scored(origin: str, grade: int, side: str = "R") -> dict[str, object]:
    probabilities = {name: 0.2 for name in PROBABILITY_COLUMNS}
    return {
        "origin": origin,
        "sha256": "a" * 64,
        "file_format": "dicom",
        "patient_id": "P1",
        "flipped": False,
        **probabilities,
        "kl_grade": grade,
        "p_koa": 0.6,
        "mean": 0.5,
        "std": 0.2,
        **prepared_knee(side),
    }


def test_a_committed_night_is_in_every_table_and_its_summary() -> None:
    ledger = _ledger(3)
    ledger.score([_scored("/in/0.dcm", 2), _scored("/in/1.dcm", 4)])
    ledger.quarantine([{"origin": "/in/2.dcm", "reasons": "not_dicom"}], "manifest")
    summary = commit_night(ledger, get_settings(), datetime.now(UTC), None)

    root = get_settings().results_dir
    scores = results.read_table(results.SCORES, root, DAY)
    quarantine = results.read_table(results.QUARANTINE, root, DAY)
    (run,) = results.read_table(results.RUNS, root, DAY).to_pylist()
    assert sorted(scores["source_path"].to_pylist()) == ["0.dcm", "1.dcm"]
    path_map = read_path_map(RUN.log_dir(get_settings().runs_dir) / PATH_MAP_FILE)
    assert path_map == {f"{i}.dcm": f"/in/{i}.dcm" for i in range(3)}
    assert quarantine["stage"].to_pylist() == ["manifest"]
    assert (run["n_inputs"], run["n_scored"], run["n_quarantined"]) == (3, 2, 1)
    assert run["status"] == "completed" and run["model_version"] == "v3"
    assert summary.grades == {0: 0, 1: 0, 2: 1, 3: 0, 4: 1}
    assert summary.p_koa == pytest.approx((0.6, 0.6))
    as_dict = summary.to_dict()
    assert set(as_dict) == SUMMARY_KEYS
    assert as_dict["batch_date"] == "2026-11-21" and as_dict["docs_path"] == ""
    assert as_dict["results_dir"] == str(root) and as_dict["failure"] is None


def test_a_bilateral_film_is_two_rows_and_a_failed_knee_quarantines_its_film() -> None:
    ledger = _ledger(3)
    ledger.score([_scored("/in/0.dcm", 1, "R"), _scored("/in/0.dcm", 3, "L")])
    ledger.quarantine([{**_scored("/in/1.dcm", 0, "L"), "reasons": "blank_input"}], "model_input")
    ledger.score([_scored("/in/1.dcm", 2, "R"), _scored("/in/2.dcm", 0, "L")])
    ledger.quarantine([{**_scored("/in/1.dcm", 2, "R"), "reasons": "x"}], "predictions")
    summary = commit_night(ledger, get_settings(), datetime.now(UTC), None)

    root = get_settings().results_dir
    scores = results.read_table(results.SCORES, root, DAY).to_pylist()
    assert [(row["source_path"], row["knee_side"]) for row in scores] == [
        ("0.dcm", "L"),
        ("0.dcm", "R"),
        ("2.dcm", "L"),
    ]
    (quarantined,) = results.read_table(results.QUARANTINE, root, DAY).to_pylist()
    assert (quarantined["source_path"], quarantined["stage"]) == ("1.dcm", "model_input")
    assert (summary.n_films_scored, summary.n_scored, summary.n_quarantined) == (2, 3, 1)


def test_a_knee_scored_twice_stops_the_commit() -> None:
    ledger = _ledger(1)
    ledger.score([_scored("/in/0.dcm", 1, "R"), _scored("/in/0.dcm", 2, "R")])
    with pytest.raises(AccountingError, match="knee scored twice"):
        commit_night(ledger, get_settings(), datetime.now(UTC), None)


def test_a_mostly_quarantined_night_is_written_and_marked_failed() -> None:
    ledger = _ledger(2)
    ledger.quarantine([{"origin": f"/in/{i}.dcm", "reasons": "not_dicom"} for i in (0, 1)], "read")
    summary = commit_night(ledger, get_settings(), datetime.now(UTC), Path("/docs/index.html"))
    assert summary.failed and summary.failure is not None and "2 of 2" in summary.failure
    root = get_settings().results_dir
    assert results.read_table(results.QUARANTINE, root, DAY).num_rows == 2
    assert results.read_table(results.RUNS, root, DAY)["status"].to_pylist() == ["failed"]
    assert summary.to_dict()["docs_path"] == "/docs/index.html"


def test_an_unaccounted_input_stops_the_commit_before_any_write() -> None:
    ledger = _ledger(2)
    ledger.score([_scored("/in/0.dcm", 0)])
    with pytest.raises(AccountingError):
        commit_night(ledger, get_settings(), datetime.now(UTC), None)
    assert not (get_settings().results_dir / results.SCORES).exists()
    assert not RUN.log_dir(get_settings().runs_dir).exists()


def test_inputs_named_alike_stop_the_commit_before_any_write() -> None:
    # Two origins with one name in the batch: no suffix can tell them apart.
    files = tuple(SourceFile(Path("/in/x.dcm"), 1, origin) for origin in ("/in/x.dcm", "x.dcm"))
    settings = get_settings()
    listing = BatchListing("/in", DAY, files, root="/in/")
    ledger = NightLedger(RUN, listing, settings, Redactor(site_secret(settings)))
    ledger.quarantine([{"origin": f.origin, "reasons": "not_dicom"} for f in files], "read")
    with pytest.raises(AccountingError, match="share a source_path"):
        commit_night(ledger, settings, datetime.now(UTC), None)
    assert not (settings.results_dir / results.QUARANTINE).exists()


def test_batch_passes_at_or_under_threshold() -> None:
    assert batch_failure(10, 5, 0.5) is None
    assert batch_failure(3, 0, 0.0) is None


@pytest.mark.parametrize(
    ("n_inputs", "n_quarantined", "match"),
    [(0, 0, "no input files"), (10, 6, "6 of 10"), (1, 1, "1 of 1")],
)
def test_batch_fails_empty_or_mostly_quarantined(
    n_inputs: int, n_quarantined: int, match: str
) -> None:
    assert match in str(batch_failure(n_inputs, n_quarantined, 0.5))
