"""One running ``koa serve`` for the deployment tests, with the checkout's real deployments."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

from deployments.access import KOA_AUTH_VAR
from deployments.serve import PROJECT_DIR
from flows.model_reports import DEFAULT_DATASET
from tests.core.kl_fixtures import write_image_folder
from tests.prefect_server import ServeProcess, serve_process

# Not the default: proves KOA_TIMEZONE travels from the environment into the schedules.
TIMEZONE = "Europe/Berlin"
# Enough images per split for every grade to reach train, val and test; trains in seconds.
PER_SPLIT = {"train": 8, "val": 4, "test": 6}
# retrain's parameters for a run that finishes in seconds on two shared cores.
TINY_RETRAIN = {"epochs": 1, "input_size": 64, "width": 8, "depth": [1, 1], "batch_size": 16}
# The service under test runs guarded, as it must off loopback; fresh for each test session.
AUTH = f"koa:{secrets.token_urlsafe(18)}"


def real_prefect_yaml() -> dict[str, Any]:
    """The checkout's prefect.yaml, YAML aliases expanded."""
    config: dict[str, Any] = yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())
    return config


def _deactivate_schedules() -> None:
    """Keep the real crons from starting a run while the tests use the worker."""
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            for schedule in deployment.schedules:
                client.update_deployment_schedule(deployment.id, schedule.id, active=False)


@pytest.fixture(scope="package")
def koa_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``python -m deployments.serve`` with the real prefect.yaml and a tiny labelled dataset
    where retrain looks by default, its server guarded by ``AUTH`` (the tests' client sends it);
    stopped with SIGTERM after the last test, which fails the run if it leaves any process
    behind."""
    home = tmp_path_factory.mktemp("koa-serve") / "home"
    write_image_folder(home / "datasets" / DEFAULT_DATASET, PER_SPLIT)
    prefect_file = PROJECT_DIR / "prefect.yaml"
    # A small default input size keeps runs that leave input_size unset (the UI's) fast.
    env = {
        "KOA_TIMEZONE": TIMEZONE,
        "KOA_INPUT_SIZE": str(TINY_RETRAIN["input_size"]),
        KOA_AUTH_VAR: AUTH,
    }
    with (
        serve_process(home, prefect_file, env) as service,
        temporary_settings({PREFECT_API_AUTH_STRING: AUTH}),
    ):
        _deactivate_schedules()
        yield service
