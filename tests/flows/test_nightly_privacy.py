"""A folder night whose file names and header errors quote patient ids and names.

The flow's logs, its artifacts and the quarantine details must carry pseudonyms only.
(``tests/reliability/test_patient_data.py`` checks a DICOMweb night, and needs Orthanc.)
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import pydicom
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from koa_core.config import get_settings
from koa_core.phantom import write_nightly_batch
from koa_core.privacy import pseudonymise, site_secret
from koa_core.storage import results
from tests.flows.models import register_tiny_champion

pytestmark = pytest.mark.usefixtures("prefect_api")
BATCH_DATE = date(2026, 11, 22)
INPUT_SIZE = 64
JANE, RICHARD = ("PID-7734-XYZ", "Doe^Jane^Q"), ("PID-0042-QRS", "Roe^Richard")
# Full names, and the family and given names alone.
SECRETS = (*JANE, *RICHARD, "Doe", "Jane", "Roe", "Richard")


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


def _prefect_texts(flow_run_id: UUID) -> tuple[list[str], list[str]]:
    APILogHandler().flush()  # send what the run logged before reading it back
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs], [str(a.data) + str(a.description) for a in artifacts]


def _leaks(texts: list[str], phantom_ids: list[str]) -> list[str]:
    return [text for text in texts for secret in [*SECRETS, *phantom_ids] if secret in text]


def test_logs_artifacts_and_details_carry_pseudonyms_only(night: Path, dask_cluster: str) -> None:
    summary = _run(dask_cluster)
    root, secret = get_settings().results_dir, site_secret(get_settings())
    scores = results.read_table(results.SCORES, root, BATCH_DATE)
    quarantine = results.read_table(results.QUARANTINE, root, BATCH_DATE).to_pylist()
    phantom_ids = [f"KOA41-{index:06d}" for index in range(2)]
    assert summary["n_scored"] == scores.num_rows == 4
    assert {Path(row["source_path"]).name: row["reasons"] for row in quarantine} == {
        f"{JANE[0]}_derived.dcm": "derived_image",
        "broken.dcm": "corrupt",
    }
    (broken,) = [row for row in quarantine if row["reasons"] == "corrupt"]
    assert str(pseudonymise(RICHARD[0], secret)) in broken["detail"]
    assert _leaks([str(row["detail"]) for row in quarantine], phantom_ids) == []

    logs, artifacts = _prefect_texts(UUID(summary["run_id"]))
    jane = str(pseudonymise(JANE[0], secret))
    # The night's last log line and the quarantine table name the files: by pseudonym.
    assert any(jane in text for text in logs) and any(jane in text for text in artifacts)
    assert _leaks(logs, phantom_ids) == [] and _leaks(artifacts, phantom_ids) == []
