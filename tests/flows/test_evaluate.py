"""The evaluate flow: re-evaluation, and drift flagged for a shifted night but not a normal one."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from koa_core.config import get_settings
from koa_core.evaluation.drift import reference_path
from koa_core.model.card import Architecture, ModelCard
from koa_core.model.checkpoint import save_torch
from koa_core.model.network import build_model
from koa_core.phantom import write_kl_folders, write_nightly_batch
from koa_core.pipeline.ledger import RunContext, ScoreRecord
from koa_core.pipeline.manifest import build_manifest
from koa_core.pipeline.prepare import prepare_chunk
from koa_core.pipeline.score import score_chunk
from koa_core.registry import ModelRegistry, champion_localizer
from koa_core.storage import results
from koa_core.storage.evaluations import read_evaluations

pytestmark = pytest.mark.usefixtures("prefect_api")
INPUT_SIZE = 64
NORMAL_NIGHT = date(2026, 11, 26)
SHIFTED_NIGHT = date(2026, 11, 27)
NIGHT_IMAGES = 24
# 140 images leave 21 in the validation split: the reference, above the KS minimum of 20.
REFERENCE_IMAGES = 140
# A different site's display processing: a strong gamma that survives percentile clipping.
SHIFT_GAMMA = 1.8


def _register_champion(kl_root: Path, workdir: Path) -> str:
    """An untrained tiny network whose card records ``kl_root`` as its training data."""
    torch.manual_seed(0)
    card = ModelCard(input_size=INPUT_SIZE, architecture=Architecture(depth=(1, 1), width=8))
    workdir.mkdir(parents=True)
    save_torch(build_model(card).state_dict(), workdir / "weights.pt")
    (workdir / "card.json").write_text(json.dumps({"card": card.to_dict()}))
    registry = ModelRegistry()
    version = registry.register(workdir, data_fingerprint={"root": str(kl_root)})
    registry.force_champion(version, reason="test fixture: an untrained network for drift")
    return version.version


def _shift_exposure(path: Path, gamma: float) -> None:
    """Re-map the stored values through ``gamma`` (bone-bright domain), uncompressed."""
    ds = pydicom.dcmread(path)
    top = 2**ds.BitsStored - 1
    stored = ds.pixel_array.astype(np.float64)
    inverted = ds.PhotometricInterpretation == "MONOCHROME1"
    bright = top - stored if inverted else stored
    shifted = top * (bright / top) ** gamma
    values = np.rint(top - shifted if inverted else shifted).astype(np.uint16)
    ds.set_pixel_data(values, ds.PhotometricInterpretation, ds.BitsStored)
    ds.save_as(path)


def _write_night(incoming: Path, day: date, seed: int, gamma: float | None) -> list[Path]:
    records = write_nightly_batch(incoming, NIGHT_IMAGES, seed, day, size_px=(384, 480))
    for record in records if gamma else []:
        _shift_exposure(record.path, gamma)
    return [record.path for record in records]


def _score_night(day: date, paths: list[Path], version: str) -> None:
    """The nightly flow's scoring path (manifest, prepare, score, write) on one night."""
    settings = get_settings()
    rows = [{**row, "origin": row["source_path"]} for row in build_manifest(paths)]
    localizer = champion_localizer()
    scratch = settings.runs_dir / day.isoformat()
    prepared = prepare_chunk(rows, scratch, 0, INPUT_SIZE, str(localizer.path))
    model = ModelRegistry().get(version)
    scored = score_chunk(prepared.array_path, prepared.rows, str(model.path), device="cpu")
    run = RunContext(day, f"run-{day}", version, model.weights_sha256, localizer.version)
    now = datetime.now(UTC)
    records = [ScoreRecord.of_prediction(row, settings, now) for row in scored]
    table = results.build_scores_table([record.to_row(run, record.origin) for record in records])
    results.write_partition(results.SCORES, day, table, settings.results_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reference dataset and the two nights' files, rendered once for the module."""
    root = tmp_path_factory.mktemp("phantoms")
    write_kl_folders(root / "kl", REFERENCE_IMAGES, seed=3)
    return {
        "kl_root": root / "kl",
        NORMAL_NIGHT: _write_night(root / "incoming", NORMAL_NIGHT, 21, None),
        SHIFTED_NIGHT: _write_night(root / "incoming", SHIFTED_NIGHT, 22, SHIFT_GAMMA),
    }


@pytest.fixture
def two_nights(images: dict[str, Any], koa_home: Path, tmp_path: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    version = _register_champion(images["kl_root"], tmp_path / "model")
    for night in (NORMAL_NIGHT, SHIFTED_NIGHT):
        _score_night(night, images[night], version)
    return {"version": version, "kl_root": images["kl_root"]}


def _drift_events(version: str, expected: int) -> list[Any]:
    """The drift events the API stored for ``version`` (events are persisted asynchronously)."""
    event_filter = EventFilter(
        event=EventNameFilter(name=["koa.drift.detected"]),
        resource=EventResourceFilter(id=[f"koa.model.{version}"]),
        occurred={"since": datetime.now(UTC) - timedelta(hours=1)},
    )
    events: list[Any] = []
    for _ in range(40):
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=event_filter, limit=50).events
        if len(events) >= expected:
            break
        time.sleep(0.5)
    return events


def test_a_shifted_night_is_flagged_and_a_normal_night_is_not(two_nights: dict[str, Any]) -> None:
    from flows.evaluate import evaluate

    version = two_nights["version"]
    summary = evaluate(data=str(two_nights["kl_root"]), window_days=2, end_date=SHIFTED_NIGHT)
    by_scope = {report["scope"]: report for report in summary["drift"]}
    assert set(by_scope) == {NORMAL_NIGHT.isoformat(), SHIFTED_NIGHT.isoformat(), "window"}
    assert not by_scope[NORMAL_NIGHT.isoformat()]["drifted"]
    shifted = by_scope[SHIFTED_NIGHT.isoformat()]
    # Every knee the localizer found on the shifted night, however dark the films.
    knees = results.read_table(results.SCORES, get_settings().results_dir, SHIFTED_NIGHT)
    assert shifted["drifted"] and shifted["n_images"] == knees.num_rows >= NIGHT_IMAGES // 2
    flagged = {v["variable"] for v in shifted["variables"] if v["drifted"]}
    assert "input_mean" in flagged
    assert NORMAL_NIGHT.isoformat() not in summary["drifted_scopes"]
    assert len(summary["events"]) == len(summary["drifted_scopes"]) >= 1

    stored = _drift_events(version, len(summary["events"]))
    assert sorted(str(e.id) for e in stored) == sorted(summary["events"])
    scopes = {e.payload["scope"] for e in stored}
    assert SHIFTED_NIGHT.isoformat() in scopes and NORMAL_NIGHT.isoformat() not in scopes
    assert all(e.resource.id == f"koa.model.{version}" for e in stored)

    # The reference was computed once and cached beside the version.
    assert reference_path(ModelRegistry().get(version)).is_file()
    assert summary["metrics"]["n_samples"] > 0
    (row,) = read_evaluations(get_settings().results_dir).to_pylist()
    assert row["role"] == "champion" and row["model_version"] == version
    assert row["promoted"] is False


def test_without_labelled_data_only_drift_is_reported(two_nights: dict[str, Any]) -> None:
    from flows.evaluate import evaluate

    summary = evaluate(window_days=1, end_date=NORMAL_NIGHT)
    assert summary["metrics"] is None
    assert [r["scope"] for r in summary["drift"]] == [NORMAL_NIGHT.isoformat()]
    assert summary["drifted_scopes"] == [] and summary["events"] == []
    assert not read_evaluations(get_settings().results_dir).num_rows
