"""Folder nights whose folders, file names and header errors quote patient ids and names.

The results, the flow's logs, its artifacts and the quarantine details must carry
pseudonyms only; the run's own folder maps each ``source_path`` back to its file.
(``tests/reliability/test_patient_data.py`` checks a DICOMweb night, and needs Orthanc.)
"""

from __future__ import annotations

import re
import stat
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from koa_core.config import get_settings
from koa_core.phantom import write_nightly_batch
from koa_core.pipeline.manifest import file_sha256
from koa_core.pipeline.source_paths import PATH_MAP_FILE, read_path_map
from koa_core.privacy import pseudonymise, site_secret
from koa_core.storage import results
from tests.flows.models import register_tiny_champion
from tests.reliability.helpers import prefect_texts

pytestmark = pytest.mark.usefixtures("prefect_api")
BATCH_DATE = date(2026, 11, 22)
INPUT_SIZE = 64
JANE, RICHARD = ("PID-7734-XYZ", "Doe^Jane^Q"), ("PID-0042-QRS", "Roe^Richard")
# Full names, and the family and given names alone.
SECRETS = (*JANE, *RICHARD, "Doe", "Jane", "Roe", "Richard")
# The acceptance night of issue 15: a PACS export named after its patient.
DOE_ID, DOE_NAME, DOE_FOLDER = "12345678", "Doe^Jane", "DOE^JANE_12345678"


def _copy(template: Path, out: Path, patient: tuple[str, str], **changes: Any) -> None:
    """The template knee as another patient's image (fresh UIDs, so no duplicate)."""
    ds = pydicom.dcmread(template)
    ds.PatientID, ds.PatientName = patient
    uid = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)


def _write_frames_as(template: Path, out: Path, patient: tuple[str, str], value: str) -> None:
    """A copy whose (0028,0008) NumberOfFrames holds ``value``: its header read fails,
    quoting the value (a scanner that wrote the patient id into the wrong element)."""
    _copy(template, out, patient)
    ds = pydicom.dcmread(out)
    tag = Tag("NumberOfFrames")
    raw = value.encode()
    ds._dict[tag] = RawDataElement(tag, "IS", len(raw), raw, 0, False, True)
    ds.save_as(out)


@pytest.fixture
def night(koa_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KOA_INPUT_SIZE", str(INPUT_SIZE))
    get_settings.cache_clear()
    incoming = get_settings().incoming_dir
    # Phantom files live under <patient id>/: their paths quote the id too.
    knees = write_nightly_batch(incoming, 2, seed=41, batch_date=BATCH_DATE)
    template, folder = Path(knees[0].path), incoming / BATCH_DATE.isoformat()
    _copy(template, folder / f"{JANE[0]}_{JANE[1]}.dcm", JANE)
    _copy(template, folder / f"{JANE[0]}_derived.dcm", JANE, ImageType=["DERIVED", "SECONDARY"])
    _copy(template, folder / "roe" / "knee.dcm", RICHARD)
    _write_frames_as(template, folder / "roe" / "broken.dcm", RICHARD, RICHARD[0])
    register_tiny_champion(INPUT_SIZE)
    return folder


def _run(dask_cluster: str) -> dict[str, Any]:
    from prefect_dask import DaskTaskRunner

    from flows.nightly import nightly_scoring

    flow = nightly_scoring.with_options(task_runner=DaskTaskRunner(address=dask_cluster))
    return flow(batch_date=BATCH_DATE)


def _leaks(texts: list[str], phantom_ids: list[str]) -> list[str]:
    return [text for text in texts for secret in [*SECRETS, *phantom_ids] if secret in text]


def _path_map(run_id: str) -> Path:
    return get_settings().runs_dir / BATCH_DATE.isoformat() / run_id / PATH_MAP_FILE


def test_logs_artifacts_and_details_carry_pseudonyms_only(night: Path, dask_cluster: str) -> None:
    summary = _run(dask_cluster)
    root, secret = get_settings().results_dir, site_secret(get_settings())
    scores = results.read_table(results.SCORES, root, BATCH_DATE)
    quarantine = results.read_table(results.QUARANTINE, root, BATCH_DATE).to_pylist()
    phantom_ids = [f"KOA41-{index:06d}" for index in range(2)]
    real = read_path_map(_path_map(summary["run_id"]))
    assert summary["n_scored"] == scores.num_rows == 4
    assert {Path(real[row["source_path"]]).name: row["reasons"] for row in quarantine} == {
        f"{JANE[0]}_derived.dcm": "derived_image",
        "broken.dcm": "corrupt",
    }
    (broken,) = [row for row in quarantine if row["reasons"] == "corrupt"]
    assert str(pseudonymise(RICHARD[0], secret)) in broken["detail"]
    assert _leaks([str(row["detail"]) for row in quarantine], phantom_ids) == []
    names = [*scores["source_path"].to_pylist(), *(row["source_path"] for row in quarantine)]
    assert _leaks(names, phantom_ids) == []

    logs, artifacts = prefect_texts(UUID(summary["run_id"]))
    jane = str(pseudonymise(JANE[0], secret))
    # The night's last log line and the quarantine table name the files: by pseudonym.
    assert any(jane in text for text in logs) and any(jane in text for text in artifacts)
    assert _leaks(logs, phantom_ids) == [] and _leaks(artifacts, phantom_ids) == []


@pytest.fixture
def doe_night(koa_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``DOE^JANE_12345678/study/series/*.dcm``: two knees named after her id, a derived
    image, and a file of no bytes (no header: only the night's others say whose it is)."""
    monkeypatch.setenv("KOA_INPUT_SIZE", str(INPUT_SIZE))
    get_settings.cache_clear()
    incoming = get_settings().incoming_dir
    knees = write_nightly_batch(koa_home / "templates", 1, seed=43, batch_date=BATCH_DATE)
    series = incoming / BATCH_DATE.isoformat() / DOE_FOLDER / "study" / "series"
    patient = (DOE_ID, DOE_NAME)
    for name in (f"{DOE_ID}_1.dcm", f"{DOE_ID}_2.dcm", "IM0001.dcm"):
        _copy(Path(knees[0].path), series / name, patient)
    _copy(Path(knees[0].path), series / "IM0002.dcm", patient, ImageType=["DERIVED", "SECONDARY"])
    (series / "IM0003.dcm").write_bytes(b"")
    register_tiny_champion(INPUT_SIZE)
    return series


def _identifying(text: str) -> list[str]:
    """What ``text`` quotes of Jane: her id, her name (either order), either part alone."""
    folded = text.casefold()
    found = [value for value in (DOE_ID, "doe^jane", "jane^doe") if value in folded]
    return found + re.findall(r"(?<![^\W_])(doe|jane)(?![^\W_])", folded)


def test_a_night_in_a_folder_named_after_the_patient_names_her_nowhere(
    doe_night: Path, dask_cluster: str
) -> None:
    summary = _run(dask_cluster)
    assert (summary["n_inputs"], summary["n_scored"], summary["n_quarantined"]) == (5, 3, 2)
    parquet = sorted(get_settings().results_dir.rglob("*.parquet"))
    assert len(parquet) >= 3  # scores, quarantine, runs
    for path in parquet:
        raw = path.read_bytes().lower()
        assert not [v for v in (DOE_ID, "doe^jane") if v.encode() in raw], path
        values = [str(v) for column in pq.read_table(path).columns for v in column.to_pylist()]
        assert [text for text in values if _identifying(text)] == [], path
    logs, artifacts = prefect_texts(UUID(summary["run_id"]))
    assert logs and artifacts
    assert [text for text in [*logs, *artifacts] if _identifying(text)] == []

    # The rows still say which file they came from: the operators' map, owner-only.
    path_map = _path_map(summary["run_id"])
    assert stat.S_IMODE(path_map.stat().st_mode) == 0o600
    real = read_path_map(path_map)
    root = get_settings().results_dir
    rows = [
        *results.read_table(results.SCORES, root, BATCH_DATE).to_pylist(),
        *results.read_table(results.QUARANTINE, root, BATCH_DATE).to_pylist(),
    ]
    files = {str(p) for p in doe_night.iterdir()}
    assert {real[row["source_path"]] for row in rows} == files
    for row in rows:
        if row["source_sha256"] is not None:
            assert row["source_sha256"] == file_sha256(Path(real[row["source_path"]]))
    jane = str(pseudonymise(DOE_ID, site_secret(get_settings())))
    assert {row["source_path"].split("/")[0] for row in rows} == {jane}
    empty = next(row for row in rows if real[row["source_path"]].endswith("IM0003.dcm"))
    assert empty["source_path"] == f"{jane}/study/series/IM0003.dcm"
