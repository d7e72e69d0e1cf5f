"""End to end: the nightly flow on a real Prefect API and a real Dask LocalCluster."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pydicom
import pytest
from pydicom.uid import generate_uid

from koa_core.config import get_settings
from koa_core.phantom import write_bad_files, write_nightly_films
from koa_core.pipeline.manifest import file_sha256
from koa_core.pipeline.source_paths import PATH_MAP_FILE, read_path_map
from koa_core.storage import results
from tests.flows.models import register_tiny_champion
from tests.localizer_fixtures import TEST_FILM_SPACING_MM

BATCH_DATE = date(2026, 11, 27)
INPUT_SIZE = 64
CHUNK_SIZE = 3
pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def night(
    koa_home: Path, monkeypatch: pytest.MonkeyPatch, champion_localizer: str
) -> dict[str, object]:
    monkeypatch.setenv("KOA_INPUT_SIZE", str(INPUT_SIZE))
    # More chunks than the flow keeps in flight on the two-worker cluster.
    monkeypatch.setenv("KOA_CHUNK_SIZE", str(CHUNK_SIZE))
    get_settings.cache_clear()
    incoming = get_settings().incoming_dir
    films = write_nightly_films(
        incoming, 10, seed=11, batch_date=BATCH_DATE, spacing_mm=TEST_FILM_SPACING_MM
    )
    folder = incoming / BATCH_DATE.isoformat()
    write_bad_files(folder / "bad", 6, seed=11)
    _write_blank_copy(Path(films[0].path), folder / "blank.dcm")
    inputs = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    version = register_tiny_champion(INPUT_SIZE)
    return {"inputs": inputs, "records": films, "version": version}


def _write_blank_copy(knee: Path, out: Path) -> None:
    """A valid knee DICOM whose pixels are all one value: only its pixels can give it away."""
    ds = pydicom.dcmread(knee)
    flat = np.full_like(ds.pixel_array, 1000)
    ds.set_pixel_data(flat, ds.PhotometricInterpretation, int(ds.BitsStored))
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(out)


def _run(dask_cluster: str) -> dict[str, object]:
    from prefect_dask import DaskTaskRunner

    from flows.nightly import nightly_scoring

    flow = nightly_scoring.with_options(task_runner=DaskTaskRunner(address=dask_cluster))
    return flow(batch_date=BATCH_DATE)


class _ProgressRecords(logging.Handler):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.done_total: list[tuple[int, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (done_total := getattr(record, self.key, None)) is not None:
            self.done_total.append(done_total)


@contextmanager
def _progress_records() -> Iterator[_ProgressRecords]:
    # Imported first: importing the flow sets Prefect's logging up, which drops the
    # handlers of its loggers.
    from flows.nightly import PROGRESS_KEY

    handler, logger = _ProgressRecords(PROGRESS_KEY), logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _real_paths(run_id: str) -> dict[str, str]:
    """The run's map from ``source_path`` to the real file, in the run's own folder."""
    run_dir = get_settings().runs_dir / BATCH_DATE.isoformat() / run_id
    return read_path_map(run_dir / PATH_MAP_FILE)


def _stable(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas().drop(
        columns=["run_id", "scored_at", "quarantined_at"], errors="ignore"
    )
    return frame.sort_values("source_path").reset_index(drop=True)


def test_every_input_is_scored_or_quarantined_exactly_once(
    night: dict[str, object], dask_cluster: str
) -> None:
    with _progress_records() as progress:
        summary = _run(dask_cluster)
    root = get_settings().results_dir
    scores = results.read_table(results.SCORES, root, BATCH_DATE)
    quarantine = results.read_table(results.QUARANTINE, root, BATCH_DATE)
    # One record per settled chunk (the last may be short), counting up to every image that
    # reached decoding: more than were scored, as blank.dcm was refused after.
    (total,) = {total for _, total in progress.done_total}
    steps = np.diff([0] + [done for done, _ in progress.done_total]).tolist()
    full, rest = divmod(total, CHUNK_SIZE)
    assert total > summary["n_films_scored"] and sum(steps) == total
    assert sorted(steps, reverse=True) == [CHUNK_SIZE] * full + [rest] * (rest > 0)
    real = _real_paths(str(summary["run_id"]))
    scored = Counter(scores["source_path"].to_pylist())
    written = scored + Counter(quarantine["source_path"].to_pylist())
    assert sorted(real[name] for name in written) == night["inputs"]
    assert not set(scored) & set(quarantine["source_path"].to_pylist())
    knees = Counter(
        zip(scores["source_path"].to_pylist(), scores["knee_side"].to_pylist(), strict=True)
    )
    assert set(knees.values()) == {1} and set(scored.values()) <= {1, 2}
    assert not any(name.startswith("/") for name in written)  # relative to the batch folder
    assert summary["n_inputs"] == len(night["inputs"])
    assert summary["n_scored"] == scores.num_rows >= 10
    assert summary["n_films_scored"] == len(scored)
    assert scores.schema.equals(results.scores_schema(), check_metadata=False)
    assert set(scores["model_version"].to_pylist()) == {night["version"]}
    assert quarantine.num_rows >= 6 and all(quarantine["reasons"].to_pylist())
    for row in [*scores.to_pylist(), *quarantine.to_pylist()]:
        real_file = Path(real[row["source_path"]])
        assert row["source_sha256"] == file_sha256(real_file), row["source_path"]
    blank = [row for row in quarantine.to_pylist() if row["source_path"].endswith("blank.dcm")]
    # A blank film has no knee on it: the localizer says so before the input checks can.
    assert [row["stage"] for row in blank] == ["localize"]
    assert blank[0]["reasons"] == "no_knee_found"


def test_rerun_replaces_the_partition_with_identical_rows(
    night: dict[str, object], dask_cluster: str
) -> None:
    _run(dask_cluster)
    root = get_settings().results_dir
    first = _stable(results.read_table(results.SCORES, root, BATCH_DATE))
    first_q = _stable(results.read_table(results.QUARANTINE, root, BATCH_DATE))
    _run(dask_cluster)
    second = _stable(results.read_table(results.SCORES, root, BATCH_DATE))
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(
        first_q, _stable(results.read_table(results.QUARANTINE, root, BATCH_DATE))
    )
    runs = results.read_table(results.RUNS, root, BATCH_DATE)
    assert runs.num_rows == 2 and set(runs["status"].to_pylist()) == {"completed"}


def test_pandas_polars_and_duckdb_read_the_dataset_with_types(
    night: dict[str, object], dask_cluster: str
) -> None:
    _run(dask_cluster)
    scores_dir = get_settings().results_dir / results.SCORES
    # Each reader's first read as the README prints it: no koa partitioning, no options.
    frame = pd.read_parquet(scores_dir)
    assert frame["p_koa"].dtype == "float32" and frame["kl_grade"].dtype == "int8"
    assert set(frame["batch_date"]) == {BATCH_DATE}
    polars = pl.read_parquet(scores_dir / "**/*.parquet")
    assert polars.schema["batch_date"] == pl.Date
    assert polars.schema["scored_at"] == pl.Datetime("us", "UTC")
    rows = duckdb.sql(
        f"select batch_date, count(*) n, min(p_kl0 + p_kl1 + p_kl2 + p_kl3 + p_kl4) s "
        f"from read_parquet('{scores_dir}/**/*.parquet', hive_partitioning=true) group by 1"
    ).fetchall()
    assert rows[0][0] == BATCH_DATE and rows[0][1] == len(frame)
    assert rows[0][2] == pytest.approx(1.0, abs=1e-3)
