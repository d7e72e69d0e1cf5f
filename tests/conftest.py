"""Suite-wide fixtures: an isolated data root per test, one Prefect API, one Dask cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from koa_core.localize.train import TrainedLocalizer
    from koa_core.registry import ModelVersion

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(autouse=True)
def koa_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data root, so nothing is written under the checkout's var/."""
    from koa_core.config import get_settings

    home = tmp_path / "koa-home"
    monkeypatch.setenv("KOA_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One Prefect test API for the whole session: the harness takes ~20 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real two-worker LocalCluster; yields its scheduler address."""
    import dask
    from distributed import LocalCluster

    scratch = tmp_path_factory.mktemp("dask")
    with (
        dask.config.set({"temporary-directory": str(scratch)}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, processes=True
        ) as cluster,
    ):
        yield cluster.scheduler_address


@pytest.fixture
def no_quality_floor(koa_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift the promotion rule's quality floor: tiny test models grade far below it."""
    from koa_core.config import get_settings

    monkeypatch.setenv("KOA_PROMOTION_MIN_QWK", "-1")
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def tiny_localizer(tmp_path_factory: pytest.TempPathFactory) -> TrainedLocalizer:
    """The suite's tiny localizer, trained once for the session."""
    from tests.localizer_fixtures import train_tiny_localizer

    return train_tiny_localizer(tmp_path_factory.mktemp("loc-train"))


@pytest.fixture(scope="session")
def tiny_localizer_dir(
    tiny_localizer: TrainedLocalizer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny localizer saved to disk; tests register it as their champion."""
    return tiny_localizer.save(tmp_path_factory.mktemp("tiny-localizer"))


@pytest.fixture
def champion_localizer(tiny_localizer_dir: Path, koa_home: Path) -> str:
    """The tiny localizer as this test's champion localizer; its version id."""
    from tests.localizer_fixtures import register_champion_localizer

    return register_champion_localizer(tiny_localizer_dir).version


# The demo champion's training job, started at collection when some test needs it.
_demo_job: dict[str, Any] = {}
DEMO_JOB_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if any("demo_champion" in getattr(item, "fixturenames", ()) for item in items):
        home = Path(tempfile.mkdtemp(prefix="koa-demo-champion-"))
        _demo_job["home"] = home
        _demo_job["process"] = subprocess.Popen(
            [sys.executable, "-m", "tests.demo_champion_job", str(home)],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.DEVNULL,
            stderr=(home / "stderr.txt").open("w"),
        )


def pytest_sessionfinish() -> None:
    process = _demo_job.get("process")
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
    if "home" in _demo_job:
        shutil.rmtree(_demo_job["home"], ignore_errors=True)


@pytest.fixture(scope="session")
def demo_champion() -> tuple[ModelVersion, list[str]]:
    """The demo's real grader, trained once for the session in a data root of its own (about
    two minutes, in a niced process started at collection): the demo test checks its
    quality, the film-night tests grade with it."""
    from koa_core.registry import ModelRegistry
    from tests.demo_champion_job import SAID

    home: Path = _demo_job["home"]
    returncode = _demo_job["process"].wait(timeout=DEMO_JOB_TIMEOUT_S)
    assert returncode == 0, (home / "stderr.txt").read_text()
    said = (home / SAID).read_text(encoding="utf-8").splitlines()
    return ModelRegistry(home / "models").get("champion"), said
