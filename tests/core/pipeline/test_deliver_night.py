"""Results built on the workers: only the films the night scored are sent, nothing is lost."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydantic import SecretStr

from koa_core.config import Settings
from koa_core.delivery.deliver import instances_dir
from koa_core.delivery.ledger import read_deliveries
from koa_core.delivery.readback import read_report
from koa_core.phantom import write_nightly_batch
from koa_core.pipeline.deliver_night import deliver_night
from koa_core.pipeline.film_results import ScoredKnee, film_overlay, keep_film_results
from koa_core.pipeline.ledger import NightLedger, RunContext
from koa_core.pipeline.manifest import build_manifest
from koa_core.pipeline.prepare import prepare_chunk
from koa_core.privacy import Redactor
from koa_core.sources.listing import BatchListing, SourceFile
from tests.core.delivery.films import ALGORITHM
from tests.core.pipeline.test_ledger import _prediction

DAY = date(2026, 11, 21)
SECRET = "deliver-night-secret"


@pytest.fixture
def scored_night(tmp_path: Path, tiny_localizer_dir: Path) -> dict[str, Any]:
    """Three one-knee DICOM films, prepared and scored as the workers would."""
    records = write_nightly_batch(tmp_path / "in", 3, seed=5, batch_date=DAY)
    paths = [Path(record.path) for record in records]
    manifest = [{**row, "origin": row["source_path"]} for row in build_manifest(paths)]
    prepared = prepare_chunk(manifest, tmp_path / "scratch", 0, 64, str(tiny_localizer_dir))
    assert not prepared.failures
    rows = [_prediction(row, grade) for grade, row in enumerate(prepared.rows)]
    files = tuple(SourceFile(path, path.stat().st_size, str(path)) for path in paths)
    listing = BatchListing("folder", DAY, files, (), root=f"{tmp_path / 'in'}/")
    return {"rows": rows, "listing": listing}


def test_only_scored_films_are_sent_and_unbuilt_ones_are_recorded(
    scored_night: dict[str, Any], koa_home: Path, tmp_path: Path
) -> None:
    settings = Settings(home=koa_home, site_secret=SecretStr(SECRET))
    run = RunContext(DAY, "run-9", ALGORITHM.model_version, "0" * 64, "loc-1")
    rows = scored_night["rows"]
    sent, dropped, unbuildable = (row["origin"] for row in rows)
    # A grade outside 0-4 cannot be written as a KL code: that film's SR cannot be built.
    rows = [{**row, "grade_set": [9]} if row["origin"] == unbuildable else row for row in rows]
    folder = instances_dir(settings.runs_dir, DAY, run.run_id)
    built = keep_film_results(rows, ALGORITHM, run.run_id, folder)
    assert isinstance(built[unbuildable], str) and "outside 0-4" in built[unbuildable]
    assert len(list(folder.glob("*.dcm"))) == 4  # SR and SC of the two others, kept

    ledger = NightLedger(run, scored_night["listing"], settings, Redactor(SECRET))
    ledger.score(rows)
    quarantined = next(row for row in rows if row["origin"] == dropped)
    ledger.quarantine([{**quarantined, "reasons": "p_koa_out_of_range"}], "predictions")
    outbox = tmp_path / "outbox"
    records = deliver_night(ledger, built, settings, str(outbox))

    by_film = {(r.source_sop_instance_uid, r.kind): (r.status, r.attempts) for r in records}
    uid = {row["origin"]: row["sop_instance_uid"] for row in rows}
    assert by_film == {
        (uid[sent], "SR"): ("delivered", 1),
        (uid[sent], "SC"): ("delivered", 1),
        (uid[unbuildable], "SR"): ("failed", 0),
        (uid[unbuildable], "SC"): ("failed", 0),
    }
    assert all("not built" in str(r.error) for r in records if r.status == "failed")
    assert len(read_deliveries(settings.results_dir, DAY)) == 4
    # The quarantined film's results were deleted unsent; the outbox has the scored film's.
    assert sorted(p.name for p in folder.glob("*.dcm")) == sorted(
        f"{r.sop_instance_uid}.dcm" for r in records if r.status == "delivered"
    )
    delivered = [pydicom.dcmread(path) for path in outbox.rglob("*.dcm")]
    report = next(ds for ds in delivered if ds.Modality == "SR")
    row = next(row for row in rows if row["origin"] == sent)
    [knee] = read_report(report)
    assert (knee.side, knee.kl_grade) == (row["knee_side"], row["kl_grade"])


def test_the_overlay_is_drawn_on_the_picture_preparing_kept(
    tmp_path: Path, tiny_localizer_dir: Path
) -> None:
    records = write_nightly_batch(tmp_path / "in", 2, seed=6, batch_date=DAY)
    paths = [Path(record.path) for record in records]
    manifest = [{**row, "origin": row["source_path"]} for row in build_manifest(paths)]
    prepared = prepare_chunk(
        manifest, tmp_path / "scratch", 0, 64, str(tiny_localizer_dir), pictures=True
    )
    assert {row["picture_key"] for row in prepared.rows} == {"0", "1"}  # one per film
    for row in prepared.rows:
        knee = ScoredKnee(_prediction(row, 2), np.linspace(0, 1, 64 * 64).reshape(64, 64))
        kept = film_overlay(Path(row["source_path"]), [knee])
        without = {key: value for key, value in knee.row.items() if key != "picture_path"}
        decoded = film_overlay(Path(row["source_path"]), [ScoredKnee(without, knee.heatmap)])
        assert kept.shape == decoded.shape and kept.ndim == 3
        assert np.array_equal(kept, decoded)
