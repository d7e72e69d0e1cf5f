"""One running ``koa serve`` for the deployment tests, registering a sample flow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.serve import PROJECT_DIR
from tests.prefect_server import ServeProcess, serve_process

SAMPLE_DEPLOYMENT = "koa-sample/sample"
# Not the default: proves KOA_TIMEZONE travels from the environment into the schedules.
TIMEZONE = "Europe/Berlin"


def real_prefect_yaml() -> dict[str, Any]:
    """The checkout's prefect.yaml, YAML aliases expanded."""
    config: dict[str, Any] = yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())
    return config


def write_sample_prefect_file(directory: Path) -> Path:
    """The real prefect.yaml (pull step, pool, schedule, concurrency) with the nightly
    deployment's settings applied to the sample flow instead of the three koa flows."""
    config = real_prefect_yaml()
    nightly = next(d for d in config["deployments"] if d["name"] == "nightly-scoring")
    sample = {
        **nightly,
        "name": "sample",
        "description": "test flow",
        "entrypoint": "tests/deployments/sample_flow.py:sample",
        "parameters": {"repeats": 2},
    }
    config["deployments"] = [sample]
    path = directory / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="package")
def koa_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``python -m deployments.serve`` with the sample deployment; stopped with SIGTERM after
    the last test, which fails the run if it leaves any process behind."""
    workdir = tmp_path_factory.mktemp("koa-serve")
    prefect_file = write_sample_prefect_file(workdir)
    with serve_process(workdir / "home", prefect_file, {"KOA_TIMEZONE": TIMEZONE}) as service:
        yield service
