"""Shared pieces of the reliability tests: small batches, flow runs, counts, RSS sampling."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import psutil
import pyarrow as pa
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from koa_core.config import get_settings
from koa_core.phantom import knee_dataset, render_knee
from koa_core.pipeline.source_paths import PATH_MAP_FILE, read_path_map
from koa_core.storage import results

BATCH_DATE = date(2026, 3, 14)
INPUT_SIZE = 64
SIDE_PX = 256
SPACING_MM = 0.6
REPO_ROOT = Path(__file__).resolve().parents[2]
FLOW_PROCESS = "tests.reliability.flow_process"
VOLATILE_COLUMNS = ["run_id", "scored_at", "quarantined_at"]


def knee_templates(count: int = 4, seed: int = 0) -> list[Dataset]:
    """``count`` small valid knee DX datasets (256 px, one per KL grade from 0 up)."""
    templates = []
    for index in range(count):
        image = render_knee(
            index % 5,
            "LR"[index % 2],
            seed + index,
            rows=SIDE_PX,
            columns=SIDE_PX,
            spacing_mm=SPACING_MM,
        )
        templates.append(
            knee_dataset(
                image,
                key=("reliability", seed, index),
                patient_id=f"KOA-REL-{index:04d}",
                study_date=BATCH_DATE,
            )
        )
    return templates


def write_replicated_batch(
    folder: Path,
    n: int,
    *,
    templates: Sequence[Dataset] | None = None,
    patient_ids: Sequence[str] | None = None,
    patient_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``n`` valid DICOMs into ``folder``, replicated from a few rendered ones.

    Each copy gets its own SOP/series/study UIDs (derived from its index, so reruns write
    the same bytes) and, when given, a patient id and name cycled from the lists.
    """
    templates = templates or knee_templates()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n):
        ds = templates[index % len(templates)]
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            setattr(ds, keyword, generate_uid(entropy_srcs=["rel", str(index), keyword]))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if patient_ids:
            ds.PatientID = patient_ids[index % len(patient_ids)]
        if patient_names:
            ds.PatientName = patient_names[index % len(patient_names)]
        path = folder / f"img-{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def batch_folder(batch_date: date = BATCH_DATE) -> Path:
    """The incoming folder of ``batch_date`` under the test's ``KOA_HOME``."""
    return get_settings().incoming_dir / batch_date.isoformat()


def batch_inputs(batch_date: date = BATCH_DATE) -> list[str]:
    """Every entry of the batch folder that the flow must account for (files and links)."""
    root = batch_folder(batch_date)
    return sorted(str(p) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def run_nightly(address: str, batch_date: date = BATCH_DATE, **kwargs: Any) -> dict[str, Any]:
    """The nightly flow on the Dask scheduler at ``address``."""
    from prefect_dask import DaskTaskRunner

    from flows.nightly import nightly_scoring

    flow = nightly_scoring.with_options(task_runner=DaskTaskRunner(address=address))
    return flow(batch_date=batch_date, **kwargs)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Outcome:
    """What the results tables hold for one batch, and whether every input is there once."""

    inputs: int
    scores: pd.DataFrame
    quarantine: pd.DataFrame
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return (
            f"inputs={self.inputs} scored={len(self.scores)} "
            f"quarantined={len(self.quarantine)} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)}"
        )

    def reasons(self) -> dict[str, str]:
        """Real input path -> quarantine reasons."""
        paths = real_paths(self.quarantine)
        return dict(zip(paths, self.quarantine["reasons"], strict=True))

    def scored(self) -> set[str]:
        """Real paths of the scored inputs."""
        return set(real_paths(self.scores))


def real_paths(frame: pd.DataFrame, batch_date: date = BATCH_DATE) -> list[str]:
    """Each row's real input path, from the path map of the run that wrote it."""
    runs = get_settings().runs_dir / batch_date.isoformat()
    maps = {run: read_path_map(runs / run / PATH_MAP_FILE) for run in set(frame["run_id"])}
    return [
        maps[run][name] for run, name in zip(frame["run_id"], frame["source_path"], strict=True)
    ]


def outcome(inputs: Sequence[str], batch_date: date = BATCH_DATE) -> Outcome:
    """Read back scores and quarantine of ``batch_date`` and account for ``inputs``."""
    root = get_settings().results_dir
    scores = results.read_table(results.SCORES, root, batch_date).to_pandas()
    quarantine = results.read_table(results.QUARANTINE, root, batch_date).to_pandas()
    seen = Counter(real_paths(scores, batch_date) + real_paths(quarantine, batch_date))
    return Outcome(
        inputs=len(inputs),
        scores=scores,
        quarantine=quarantine,
        lost=sorted(set(inputs) - set(seen)),
        duplicated=sorted(p for p, n in seen.items() if n > 1 or p not in set(inputs)),
    )


def report(label: str, result: Outcome) -> None:
    """Print the counts line the ``make fuzz`` / ``make soak`` runs show (with ``-s``)."""
    print(f"\n[{label}] {result.line}")


def stable(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """A results table without the columns that differ between runs, in a fixed order."""
    frame = table.to_pandas() if isinstance(table, pa.Table) else table
    frame = frame.drop(columns=VOLATILE_COLUMNS, errors="ignore")
    return frame.sort_values("source_path").reset_index(drop=True)


def partition_files(table_name: str, batch_date: date = BATCH_DATE) -> list[str]:
    """The file names inside one live partition directory (empty when there is none)."""
    folder = results.partition_dir(get_settings().results_dir, table_name, batch_date)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def flow_process_env(address: str) -> dict[str, str]:
    """Environment for a flow subprocess: this test's ``KOA_*``, its Prefect API, its cluster."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        KOA_DASK_ADDRESS=address,
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def start_flow_process(address: str, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m tests.reliability.flow_process ARGS`` (see that module)."""
    return subprocess.Popen(
        [sys.executable, "-m", FLOW_PROCESS, BATCH_DATE.isoformat(), *args],
        cwd=REPO_ROOT,
        env=flow_process_env(address),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_path(path: Path, process: subprocess.Popen[str], timeout_s: float = 120.0) -> None:
    """Block until ``path`` exists; fail early with the process output if it exits first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"flow process exited {process.returncode} early:\n{output}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.05)


class RssSampler:
    """Samples the resident memory of some processes in a background thread; keeps peaks."""

    def __init__(self, pids: dict[str, list[int]], interval_s: float = 0.2) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.peaks: dict[str, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for role, pids in self.pids.items():
            for pid in pids:
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:  # a worker that a nanny replaced
                    continue
                self.peaks[role] = max(self.peaks[role], rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._sample()
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self._sample()

    def line(self) -> str:
        return " ".join(
            f"peak_rss_{role}={peak / 2**20:.0f}MiB" for role, peak in self.peaks.items()
        )


def prefect_texts(flow_run_id: UUID) -> tuple[list[str], list[str]]:
    """Every log message and artifact (data and description) of a flow run, from its API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send what the run logged before reading it back
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs], [str(a.data) + str(a.description) for a in artifacts]
