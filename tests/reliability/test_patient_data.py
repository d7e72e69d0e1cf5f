"""Patient data on a DICOMweb night: pseudonyms in outputs, no ids in logs, no copies left."""

from __future__ import annotations

import re
from pathlib import Path
from uuid import UUID

import pyarrow as pa
import pytest
import requests

from koa_core.config import get_settings
from koa_core.privacy import pseudonymise, site_secret
from koa_core.sources.staging import staging_dir_for
from koa_core.storage import results
from tests.orthanc import run_orthanc
from tests.reliability.helpers import (
    BATCH_DATE,
    knee_templates,
    outcome,
    prefect_texts,
    real_paths,
    report,
    run_nightly,
)

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]
PATIENT_IDS = ("PID-7734-XYZ", "PID-0042-QRS")
PATIENT_NAMES = ("Doe^Jane^Q", "Roe^Richard")


def _upload(orthanc_url: str) -> int:
    templates = knee_templates(3)
    templates[2].ImageType = ["DERIVED", "SECONDARY"]  # quarantined, still carrying its ids
    for index, ds in enumerate(templates):
        ds.PatientID, ds.PatientName = PATIENT_IDS[index % 2], PATIENT_NAMES[index % 2]
        path = get_settings().home / f"upload-{index}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        response = requests.post(f"{orthanc_url}/instances", data=path.read_bytes(), timeout=10)
        response.raise_for_status()
        path.unlink()
    return len(templates)


def _texts(table: pa.Table) -> list[str]:
    return [str(value) for column in table.columns for value in column.to_pylist()]


def _leaks(texts: list[str]) -> list[str]:
    secrets = [*PATIENT_IDS, *PATIENT_NAMES, *(n.split("^")[0] for n in PATIENT_NAMES)]
    return [text for text in texts for secret in secrets if secret in text]


def test_dicomweb_night_keeps_patient_data_out_of_every_output(
    small_settings: Path, dask_cluster: str, tmp_path: Path
) -> None:
    settings = get_settings()
    with run_orthanc(tmp_path / "orthanc") as orthanc:
        n_inputs = _upload(orthanc.url)
        summary = run_nightly(dask_cluster, source=f"dicomweb+{orthanc.dicomweb_url}")
    root = settings.results_dir
    tables = {
        name: results.read_table(name, root, BATCH_DATE)
        for name in (results.SCORES, results.QUARANTINE, results.RUNS)
    }
    frames = [tables[name].to_pandas() for name in (results.SCORES, results.QUARANTINE)]
    night = outcome([path for frame in frames for path in real_paths(frame)])
    report("patient data", night)
    # Each instance is named by its path after the server root, and traced by its WADO-RS URL.
    names = [name for frame in frames for name in frame["source_path"]]
    assert all(re.fullmatch(r"studies/[\d.]+/series/[\d.]+/instances/[\d.]+", n) for n in names)
    assert all(path.startswith("http") for frame in frames for path in real_paths(frame))
    assert summary["n_inputs"] == n_inputs and tables["scores"].num_rows == 2
    assert tables["quarantine"].num_rows == 1

    secret = site_secret(settings)
    expected_keys = {pseudonymise(pid, secret) for pid in PATIENT_IDS}
    assert set(tables["scores"]["patient_key"].to_pylist()) == expected_keys
    assert _leaks([text for table in tables.values() for text in _texts(table)]) == []

    logs, artifacts = prefect_texts(UUID(summary["run_id"]))
    assert logs and artifacts  # the run did log and publish: there was something to leak
    assert _leaks(logs) == [] and _leaks(artifacts) == []
    # The pulled copies were removed (keep_staged_files is off by default).
    assert not staging_dir_for(BATCH_DATE, settings).exists()
    assert not list(settings.home.rglob("*.dcm"))
