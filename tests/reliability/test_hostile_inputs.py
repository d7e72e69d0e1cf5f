"""Hostile inputs: each is quarantined with its own reason (or scored when harmless), cheaply."""

from __future__ import annotations

import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from koa_core.config import get_settings
from koa_core.errors import ImageReadError
from koa_core.io.model_input import load_model_input
from koa_core.pipeline.manifest import manifest_row
from koa_core.sources.listing import list_batch
from tests.reliability.helpers import (
    BATCH_DATE,
    INPUT_SIZE,
    batch_folder,
    outcome,
    report,
    run_nightly,
    write_replicated_batch,
)
from tests.reliability.hostile import HOSTILE_KINDS, SCORED, Hostile

# Generous bounds: a 256 px image reads in milliseconds; what they catch is a file that
# makes koa hash 64 GiB, allocate a 65535^2 frame or recurse without end.
MAX_SECONDS_PER_FILE = 5.0
MAX_TRACED_BYTES_PER_FILE = 64 * 2**20
# koa may spend half as much again as one plain inflation up to the limit, never a second one.
BOMB_CPU_OVER_ONE_INFLATION = 1.5
INFLATION_SAMPLE_BYTES = 64 * 2**20


@pytest.fixture
def hostile_night(small_settings: Path, tmp_path: Path) -> dict[str, Hostile]:
    """Every hostile kind plus four valid images in one batch folder; path -> kind."""
    folder = batch_folder()
    folder.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    by_path: dict[str, Hostile] = {}
    for hostile in HOSTILE_KINDS:
        for path in hostile.write(folder, outside):
            by_path[str(path)] = hostile
    valid = Hostile("valid", SCORED, lambda folder, outside: [])
    for path in write_replicated_batch(folder / "valid", 4):
        by_path[str(path)] = valid
    return by_path


def _expected(path: str, hostile: Hostile) -> str:
    # The first copy of a re-sent image is the one scored.
    return (
        SCORED
        if hostile.kind == "duplicate_uid" and path.endswith("dup-a.dcm")
        else hostile.expected
    )


def test_the_matrix_has_at_least_twenty_kinds() -> None:
    assert len({h.kind for h in HOSTILE_KINDS}) >= 20
    assert len({h.expected for h in HOSTILE_KINDS}) >= 10


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.slow
def test_nightly_flow_quarantines_each_kind_with_its_reason(
    hostile_night: dict[str, Hostile],
    dask_cluster: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("KOA_MAX_QUARANTINE_SHARE", "1.0")
    monkeypatch.chdir(tmp_path)  # where a name's `$(touch PWNED)` would land if a shell ran it
    get_settings.cache_clear()
    summary = run_nightly(dask_cluster)
    night = outcome(sorted(hostile_night))
    report("hostile", night)
    assert not night.lost and not night.duplicated
    assert summary["status"] == "completed"
    reasons = night.reasons()
    scored = night.scored()
    wrong = {}
    for path, hostile in hostile_night.items():
        expected = _expected(path, hostile)
        got = "scored" if path in scored else reasons[path]
        if expected != got and expected not in got.split(";"):
            wrong[hostile.kind] = f"expected {expected}, got {got}"
    assert wrong == {}
    assert not list(tmp_path.rglob("PWNED")) and not list(batch_folder().rglob("PWNED"))


@pytest.mark.parametrize("hostile", HOSTILE_KINDS, ids=lambda h: h.kind)
def test_each_file_is_settled_in_bounded_time_and_memory(
    hostile: Hostile, small_settings: Path, tmp_path: Path
) -> None:
    folder = batch_folder()
    folder.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile.write(folder, outside)
    listing = list_batch(get_settings().incoming_dir, BATCH_DATE)
    for rejected in listing.rejected:
        assert rejected.reason == hostile.expected
    for source in listing.files:
        tracemalloc.start()
        started = time.perf_counter()
        row = manifest_row(source.path)
        if row["read_error"] is None:
            try:
                load_model_input(source.path, INPUT_SIZE)
            except ImageReadError as error:
                row["read_error"] = error.reason
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert elapsed < MAX_SECONDS_PER_FILE, f"{hostile.kind}: {elapsed:.1f} s"
        assert peak < MAX_TRACED_BYTES_PER_FILE, f"{hostile.kind}: {peak / 2**20:.0f} MiB"
        if row["read_error"] is not None:
            assert row["read_error"] == hostile.expected


def _one_inflation_cpu_seconds(inflated_bytes: int) -> float:
    """CPU seconds this machine's zlib takes to inflate ``inflated_bytes`` of zeros once.

    zlib inflates ~1 GB/s on one Xeon and ~0.5 GB/s on one EPYC core here, so the bound is
    relative: measured in the same test, scaled from a 64 MiB sample.
    """
    stream = zlib.compress(bytes(INFLATION_SAMPLE_BYTES), 9)
    started = time.process_time()
    zlib.decompress(stream)
    return (time.process_time() - started) * inflated_bytes / INFLATION_SAMPLE_BYTES


def test_a_2_gib_deflate_bomb_is_refused_after_one_bounded_inflation_and_64_mib(
    tmp_path: Path,
) -> None:
    """Issue 15: the deflated data set is counted as it inflates and refused past the limit.

    The file is ~2.3 MB (deflate's ~1032:1 ceiling; the issue's 10 KB is out of reach) and
    the limit the default ``max_file_bytes``. The CPU bound is on the work the file costs:
    inflating up to the limit once (~0.45 s on the Xeon, ~1 s on the EPYC), never all 2 GiB;
    the wall-clock bound is the generous per-file one.
    """
    (bomb,) = (hostile for hostile in HOSTILE_KINDS if hostile.kind == "deflate_bomb")
    (path,) = bomb.write(tmp_path, tmp_path)
    tracemalloc.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    row = manifest_row(path)
    cpu = time.process_time() - cpu_started
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert row["read_error"] == "decompression_bomb"
    one_inflation = _one_inflation_cpu_seconds(get_settings().max_file_bytes)
    assert cpu < BOMB_CPU_OVER_ONE_INFLATION * one_inflation, (
        f"{cpu:.2f} s of CPU; one inflation to the limit takes {one_inflation:.2f} s"
    )
    assert elapsed < MAX_SECONDS_PER_FILE, f"{elapsed:.1f} s"
    assert peak < MAX_TRACED_BYTES_PER_FILE, f"{peak / 2**20:.0f} MiB"
