"""The night's ledger: typed records from every stage, one detail source, exact accounting."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from koa_core.config import Settings
from koa_core.phantom import write_bad_files, write_nightly_batch
from koa_core.pipeline.ledger import AccountingError, NightLedger, RunContext
from koa_core.pipeline.manifest import build_manifest, with_sha256
from koa_core.pipeline.prepare import prepare_chunk
from koa_core.privacy import Redactor, pseudonymise
from koa_core.schema import PROBABILITY_COLUMNS
from koa_core.sources.listing import BatchListing, RejectedFile, SourceFile
from koa_core.storage import results

DAY = date(2026, 11, 20)
SECRET = "ledger-test-secret"
RUN = RunContext(DAY, "run-1", "v1", "0" * 64, "loc-1")
SETTINGS = Settings(site_secret=SecretStr(SECRET))
REJECTED = RejectedFile("/in/escape.dcm", "unsafe_path", "symlink leaves the batch folder")


def _listing(night: dict[str, Any], rejected: tuple[RejectedFile, ...] = ()) -> BatchListing:
    files = tuple(SourceFile(path, path.stat().st_size, str(path)) for path in night["paths"])
    return BatchListing("folder", DAY, files, rejected, root=f"{night['batch']}/")


def _prediction(row: dict[str, Any], grade: int) -> dict[str, Any]:
    """A scored row as ``score_chunk`` returns it (the model is not under test here)."""
    probabilities = [0.05] * len(PROBABILITY_COLUMNS)
    probabilities[grade] = 0.8
    return {
        **row,
        **dict(zip(PROBABILITY_COLUMNS, probabilities, strict=True)),
        "kl_grade": grade,
        "p_koa": sum(probabilities[2:]),
        "grade_set": [grade],
        "refer": False,
        "refer_reason": None,
    }


@pytest.fixture
def night(tmp_path: Path, tiny_localizer_dir: Path) -> dict[str, Any]:
    """Two knees, a truncated file (fails decoding) and an empty one (fails its header)."""
    knees = [r.path for r in write_nightly_batch(tmp_path / "in", 2, seed=3, batch_date=DAY)]
    batch = tmp_path / "in" / DAY.isoformat()
    bad = [r.path for r in write_bad_files(batch / "bad", 2, seed=3)]
    paths = [Path(p) for p in [*knees, *bad]]
    manifest = [{**row, "origin": row["source_path"]} for row in build_manifest(paths)]
    return {
        "paths": paths,
        "manifest": manifest,
        "scratch": tmp_path / "scratch",
        "batch": batch,
        "localizer": str(tiny_localizer_dir),
    }


def test_every_stage_lands_in_one_table_with_its_detail(night: dict[str, Any]) -> None:
    ledger = NightLedger(RUN, _listing(night, (REJECTED,)), SETTINGS, Redactor(SECRET))
    readable = [row for row in night["manifest"] if row["read_error"] is None]
    # run_suite turns a header's read_error into the row's reasons.
    refused = [{**r, "reasons": r["read_error"]} for r in night["manifest"] if r["read_error"]]
    ledger.quarantine(with_sha256(refused), "manifest")
    prepared = prepare_chunk(readable, night["scratch"], 0, 64, night["localizer"])
    ledger.quarantine(prepared.failures, "read")
    ledger.score(_prediction(row, grade) for grade, row in enumerate(prepared.rows))

    ledger.account()
    details = {(Path(q.origin).name, q.stage, q.reasons): q.detail for q in ledger.quarantined}
    assert sorted(details) == [
        ("bad-000-truncated.dcm", "read", "truncated"),
        ("bad-001-zero_byte.dcm", "manifest", "empty_file"),
        ("escape.dcm", "read", "unsafe_path"),
    ]
    # The listing's, the header's and the decoder's details, all in the one ``detail``.
    assert details[("escape.dcm", "read", "unsafe_path")] == REJECTED.detail
    assert details[("bad-001-zero_byte.dcm", "manifest", "empty_file")] == "the file has zero bytes"
    assert "(7FE0,0010)" in str(details[("bad-000-truncated.dcm", "read", "truncated")])
    assert ledger.n_inputs == 5 and len(ledger.scores) == 2
    assert ledger.grade_distribution() == {0: 1, 1: 1, 2: 0, 3: 0, 4: 0}
    scores = results.build_scores_table(ledger.score_rows())
    quarantine = results.build_table(results.QUARANTINE, ledger.quarantine_rows())
    assert scores.num_rows == 2 and quarantine.num_rows == 3
    assert set(scores["patient_key"].to_pylist()) == {
        pseudonymise(row["patient_id"], SECRET) for row in prepared.rows
    }
    assert quarantine["source_sha256"].null_count == 1  # only the file never read


def test_rows_name_inputs_in_the_batch_without_their_patients(night: dict[str, Any]) -> None:
    listing = _listing(night)
    ledger = NightLedger(RUN, listing, SETTINGS, Redactor(SECRET))
    ledger.learn_headers(night["manifest"])
    knees = [row for row in night["manifest"] if row["read_error"] is None][:2]
    ledger.score(
        _prediction(row, 0)
        for row in prepare_chunk(knees, night["scratch"], 0, 64, night["localizer"]).rows
    )
    refused = [
        {**r, "reasons": "x"}
        for r in night["manifest"]
        if r["origin"] not in {k["origin"] for k in knees}
    ]
    ledger.quarantine(refused, "manifest")
    ledger.account()

    names = ledger.source_paths()
    for knee in knees:
        # <patient id>/<study uid>/<sop uid>.dcm: the folder named after the patient is keyed.
        _, study, sop = listing.relative_name(knee["origin"]).split("/")
        key = pseudonymise(knee["patient_id"], SECRET)
        assert names[knee["origin"]] == f"{key}/{study}/{sop}"
    rows = [*ledger.score_rows(), *ledger.quarantine_rows()]
    assert sorted(row["source_path"] for row in rows) == sorted(names.values())
    assert ledger.real_paths() == {name: origin for origin, name in names.items()}
    assert not any(row["source_path"].startswith("/") for row in rows)


def test_accounting_names_inputs_missing_or_written_twice(night: dict[str, Any]) -> None:
    ledger = NightLedger(RUN, _listing(night), SETTINGS, Redactor(SECRET))
    first, second, *_ = night["manifest"]
    # Two rows of one input (two knees of a film) make one record with both reasons.
    ledger.quarantine([{**first, "reasons": "x"}, {**first, "reasons": "y"}], "manifest")
    ledger.quarantine([{**first, "reasons": "z"}], "predictions")
    (record,) = ledger.quarantined
    assert (record.reasons, record.stage) == ("x;y", "manifest")
    with pytest.raises(AccountingError, match=r"3 input\(s\) neither .* 0 written more than once"):
        ledger.account()
    assert second["origin"] not in {q.origin for q in ledger.quarantined}


def test_details_leave_the_ledger_redacted(night: dict[str, Any]) -> None:
    ledger = NightLedger(RUN, _listing(night), SETTINGS, Redactor(SECRET))
    ledger.learn_headers(night["manifest"])
    knee = night["manifest"][0]
    patient_id, patient_name = knee["patient_id"], knee["patient_name"]
    detail = f"NumberOfFrames: invalid literal '{patient_id}' ({patient_name})"
    ledger.quarantine([{**knee, "reasons": "corrupt", "read_error_detail": detail}], "manifest")
    (row,) = ledger.quarantine_rows()
    assert patient_id not in row["detail"] and patient_name not in row["detail"]
    assert str(pseudonymise(patient_id, SECRET)) in row["detail"]
    assert ledger.quarantined[0].detail == detail  # the record keeps the raw text in memory
