"""A night of whole films through the real flow: every knee once with its side and grade, every
other input quarantined with its reason, and each film's SR and SC delivered to an outbox, or
to a real Orthanc that is down for the night and sent again by `koa deliver`."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from koa_core.config import get_settings
from koa_core.delivery.readback import read_report
from koa_core.phantom import Film, film_dataset, render_film, save_dicom, write_bad_files
from koa_core.registry import ModelRegistry, ModelVersion
from koa_core.storage import results
from tests.localizer_fixtures import TEST_FILM_SPACING_MM

BATCH_DATE = date(2026, 11, 28)
# (R, L) grades far apart, so a knee graded as its neighbour shows at once.
BILATERAL_GRADES = ((0, 4), (4, 0), (0, 3), (3, 0))
pytestmark = pytest.mark.usefixtures("prefect_api")


def _write(film: Film, folder: Path, name: str, **header: str) -> Path:
    ds = film_dataset(film, key=(name,), patient_id=f"P-{name}", study_date=BATCH_DATE)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    path = folder / f"{name}.dcm"
    save_dicom(ds, path)
    return path


def _blank(film: Film, folder: Path) -> Path:
    """A film header over an even grey: no knee on it."""
    flat = replace(film, pixels=np.full_like(film.pixels, 900))
    return _write(flat, folder, "blank")


@pytest.fixture
def night(
    koa_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    champion_localizer: str,
    demo_champion: tuple[ModelVersion, list[str]],
) -> dict[str, Any]:
    outbox = koa_home / "outbox"
    monkeypatch.setenv("KOA_DELIVER_TO", str(outbox))
    get_settings.cache_clear()
    # The demo's registry as this test's: its champion grader, promoted by the rule.
    shutil.copytree(demo_champion[0].path.parents[1], get_settings().models_dir, dirs_exist_ok=True)
    assert ModelRegistry().get("champion").version == demo_champion[0].version
    folder = get_settings().incoming_dir / BATCH_DATE.isoformat()
    folder.mkdir(parents=True)
    truth: dict[str, Film] = {}
    for index, grades in enumerate(BILATERAL_GRADES):
        film = render_film("bilateral", 30 + index, grades=grades, spacing_mm=TEST_FILM_SPACING_MM)
        truth[_write(film, folder, f"bilateral-{index}").name] = film
    for index, side in enumerate("RL"):
        film = render_film("unilateral", 40 + index, side=side, spacing_mm=TEST_FILM_SPACING_MM)
        truth[_write(film, folder, f"unilateral-{side}").name] = film
    lateral = render_film("lateral", 50, spacing_mm=TEST_FILM_SPACING_MM)
    _write(lateral, folder, "lateral")
    # A side view whose header says nothing of the view: the image itself must tell.
    unlabelled = render_film("lateral", 52, spacing_mm=TEST_FILM_SPACING_MM)
    unsaid = {"ViewPosition": "", "StudyDescription": "XR KNEE", "SeriesDescription": "XR KNEE"}
    _write(unlabelled, folder, "lateral-unlabelled", **unsaid)
    _blank(render_film("unilateral", 51, spacing_mm=TEST_FILM_SPACING_MM), folder)
    # Three broken files: with the two side views and the blank, half the night (the limit).
    bad = write_bad_files(folder / "bad", 3, seed=5)
    return {"truth": truth, "bad": bad, "outbox": outbox, "folder": folder}


def _run() -> dict[str, Any]:
    from flows.nightly import nightly_scoring

    return nightly_scoring(batch_date=BATCH_DATE)


def test_a_night_of_films_scores_every_knee_once_and_delivers_its_results(
    night: dict[str, Any],
) -> None:
    summary = _run()
    root = get_settings().results_dir
    scores = results.read_table(results.SCORES, root, BATCH_DATE).to_pylist()
    quarantine = results.read_table(results.QUARANTINE, root, BATCH_DATE).to_pylist()
    by_file: dict[str, dict[str, dict[str, Any]]] = {}
    for row in scores:
        by_file.setdefault(Path(row["source_path"]).name, {})[row["knee_side"]] = row
    truth: dict[str, Film] = night["truth"]
    assert set(by_file) == set(truth)
    uncovered = []
    for name, film in truth.items():
        rows = by_file[name]
        assert sorted(rows) == sorted(knee.side for knee in film.knees), name
        for knee in film.knees:
            row = rows[knee.side]
            error_mm = np.hypot(row["joint_x"] - knee.joint_x, row["joint_y"] - knee.joint_y)
            assert error_mm * film.spacing_mm < 10.0, (name, knee.side)
            assert abs(row["kl_grade"] - knee.grade) <= 1, (name, knee.side, row["kl_grade"])
            if not (knee.grade in row["grade_set"] or row["refer"]):
                uncovered.append((name, knee.side, knee.grade, row["grade_set"]))
    # A 90 % set misses about one knee in ten: of these ten, one may go unreferred.
    assert len(uncovered) <= 1, uncovered
    reasons = {Path(row["source_path"]).name: row["reasons"] for row in quarantine}
    [unsaid] = [row for row in quarantine if row["source_path"].endswith("lateral-unlabelled.dcm")]
    assert "looks like a lateral view" in unsaid["detail"]
    assert reasons.pop("lateral.dcm") == "not_frontal_view"
    assert reasons.pop("lateral-unlabelled.dcm") == "not_frontal_view"
    assert reasons.pop("blank.dcm") == "no_knee_found"
    assert len(reasons) == len({Path(record.path).name for record in night["bad"]})
    assert all(reasons.values())
    assert summary["n_films_scored"] == len(truth)
    assert summary["n_scored"] == sum(len(film.knees) for film in truth.values())
    _assert_one_sr_and_sc_per_film_holding_its_rows(night["outbox"])


def _assert_one_sr_and_sc_per_film_holding_its_rows(outbox: Path) -> None:
    scores = results.read_table(results.SCORES, get_settings().results_dir, BATCH_DATE)
    delivered = [pydicom.dcmread(path) for path in outbox.rglob("*.dcm")]
    reports = {str(ds.SOPInstanceUID): ds for ds in delivered if ds.Modality == "SR"}
    captures = [ds for ds in delivered if ds.Modality != "SR"]
    films = {row["sop_instance_uid"] for row in scores.to_pylist()}
    assert len(reports) == len(captures) == len(films)
    for row in scores.to_pylist():
        report = reports[row["sr_sop_instance_uid"]]
        assert report.StudyInstanceUID == row["study_instance_uid"]
        (knee,) = [knee for knee in read_report(report) if knee.side == row["knee_side"]]
        assert (knee.kl_grade, knee.refer) == (row["kl_grade"], row["refer"])
        assert knee.p_koa == pytest.approx(row["p_koa"], abs=1e-4)
        assert list(knee.grade_set) == row["grade_set"]
    deliveries = results.read_table(results.DELIVERIES, get_settings().results_dir, BATCH_DATE)
    assert set(deliveries["status"].to_pylist()) == {"delivered"}
    assert deliveries.num_rows == 2 * len(films)


def test_a_night_delivered_to_a_real_orthanc_reads_back_as_its_rows(
    night: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from koa_core.delivery.deliver import redeliver_failed
    from tests.core.delivery.test_deliver import _closed_port
    from tests.orthanc import run_orthanc

    # The PACS is down for the night: the scores are written, every result is recorded failed.
    monkeypatch.setenv("KOA_DELIVER_TO", f"http://127.0.0.1:{_closed_port()}/dicom-web")
    monkeypatch.setenv("KOA_DELIVER_BACKOFF_S", "0.05")
    get_settings.cache_clear()
    summary = _run()
    root = get_settings().results_dir
    assert results.read_table(results.SCORES, root, BATCH_DATE).num_rows == summary["n_scored"]
    failed = results.read_table(results.DELIVERIES, root, BATCH_DATE).to_pylist()
    assert len(failed) == 2 * summary["n_films_scored"]
    assert {row["status"] for row in failed} == {"failed"}
    with run_orthanc(tmp_path / "orthanc", overwrite=True) as pacs:
        # Back up: `koa deliver` sends what failed, then a re-run replaces, never duplicates.
        sent = redeliver_failed(BATCH_DATE, pacs.dicomweb_url)
        assert {record.status for record in sent} == {"delivered"}
        _assert_each_study_holds_one_sr_and_sc_equal_to_its_rows(pacs)
        monkeypatch.setenv("KOA_DELIVER_TO", pacs.dicomweb_url)
        get_settings.cache_clear()
        _run()
        _assert_each_study_holds_one_sr_and_sc_equal_to_its_rows(pacs)


def _assert_each_study_holds_one_sr_and_sc_equal_to_its_rows(pacs: Any) -> None:
    from tests.core.delivery.test_orthanc_delivery import (
        SC_CLASS,
        SR_CLASS,
        _results_in_study,
        _retrieve,
    )

    scores = results.read_table(results.SCORES, get_settings().results_dir, BATCH_DATE)
    by_study: dict[str, list[dict[str, Any]]] = {}
    for row in scores.to_pylist():
        by_study.setdefault(row["study_instance_uid"], []).append(row)
    for study, rows in by_study.items():
        found = _results_in_study(pacs, study)
        (sr_uid,) = found[SR_CLASS]
        assert len(found[SC_CLASS]) == 1
        assert {row["sr_sop_instance_uid"] for row in rows} == {sr_uid}
        reported = {knee.side: knee for knee in read_report(_retrieve(pacs, study, sr_uid))}
        for row in rows:
            knee = reported[row["knee_side"]]
            assert (knee.kl_grade, list(knee.grade_set)) == (row["kl_grade"], row["grade_set"])
            assert knee.p_koa == pytest.approx(row["p_koa"], abs=1e-4)
