"""A small fixed night and the rows it produced: the behaviour pin of the nightly flow.

Only ``koa_core.phantom.write_nightly_batch``, ``tests.flows.models`` and the Parquet files
are used, all of which exist in the flat layout of commit 60323d4 too, so the expected rows
(``golden_night.json``) can be regenerated on that commit (``make_golden_night``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from pydicom.uid import generate_uid

from koa_core.phantom import write_nightly_batch

BATCH_DATE = date(2026, 11, 20)
INPUT_SIZE = 64
CHUNK_SIZE = 4
MODEL_SEED = 5
FIXTURE = Path(__file__).with_name("golden_night.json")
# Probabilities and input statistics are float32 in Parquet: 5 decimals are stable.
DECIMALS = 5
SCORE_TEXT_COLUMNS = (
    "source_sha256",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "patient_key",
    "laterality",
    "flipped",
    "file_format",
    "kl_grade",
    "preprocess_version",
    "weights_sha256",
)
SCORE_FLOAT_COLUMNS = (
    "p_kl0",
    "p_kl1",
    "p_kl2",
    "p_kl3",
    "p_kl4",
    "p_koa",
    "input_mean",
    "input_std",
)
QUARANTINE_COLUMNS = ("source_sha256", "stage", "reasons", "detail")
RUN_COLUMNS = ("n_inputs", "n_scored", "n_quarantined", "status")


def write_night(incoming: Path) -> Path:
    """Six knee DICOMs, seven bad files, two PNGs and a blank DICOM; return the batch folder."""
    knees = write_nightly_batch(incoming, 6, seed=31, batch_date=BATCH_DATE, bad=7)
    write_nightly_batch(incoming, 2, seed=32, batch_date=BATCH_DATE, file_format="png")
    folder = incoming / BATCH_DATE.isoformat()
    _write_blank_copy(Path(knees[0].path), folder / "blank.dcm")
    return folder


def _write_blank_copy(knee: Path, out: Path) -> None:
    """A valid knee DICOM whose pixels are all one value: only the input checks catch it."""
    ds = pydicom.dcmread(knee)
    flat = np.full_like(ds.pixel_array, 1000)
    ds.set_pixel_data(flat, ds.PhotometricInterpretation, int(ds.BitsStored))
    # A fixed UID in both places: the file's bytes, hence its SHA-256, are pinned too.
    uid = generate_uid(entropy_srcs=["koa-golden-night", "blank"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(out)


def night_rows(
    results_dir: Path, folder: Path, real_paths: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The night's ``scores``, ``quarantine`` and ``runs`` rows, free of run ids and times.

    Each row's ``source`` is its real file's name relative to ``folder`` (the batch folder
    inside details too). ``real_paths`` maps ``source_path`` to the real path (the run's
    ``paths.csv``); without it (the code of 60323d4 wrote real paths) it is the identity.
    """
    prefix = f"{folder}/"

    def relative(text: str | None) -> str | None:
        return text.replace(prefix, "") if text is not None else None

    def source(name: str) -> str | None:
        return relative((real_paths or {}).get(name, name))

    scores = [
        {
            "source": source(row["source_path"]),
            **{name: row[name] for name in SCORE_TEXT_COLUMNS},
            **{name: round(float(row[name]), DECIMALS) for name in SCORE_FLOAT_COLUMNS},
        }
        for row in _rows(results_dir, "scores")
    ]
    quarantine = [
        {
            "source": source(row["source_path"]),
            **{n: relative(row[n]) for n in QUARANTINE_COLUMNS},
        }
        for row in _rows(results_dir, "quarantine")
    ]
    runs = [{name: row[name] for name in RUN_COLUMNS} for row in _rows(results_dir, "runs")]
    return {
        "scores": sorted(scores, key=lambda row: str(row["source"])),
        "quarantine": sorted(quarantine, key=lambda row: (str(row["source"]), str(row["stage"]))),
        "runs": runs,
    }


def _rows(results_dir: Path, table: str) -> list[dict[str, Any]]:
    """Every row of one table, read file by file: the partition folder's name may change."""
    files = sorted((results_dir / table).glob("*/*.parquet"))
    tables = [pq.read_table(path) for path in files]
    return pa.concat_tables(tables).to_pylist() if tables else []
