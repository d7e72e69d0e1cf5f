"""``koa serve`` for real: server, work pool, deployments from prefect.yaml, worker, runs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError
from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule

from deployments.serve import (
    WORK_POOL,
    PrefectService,
    PrefectServiceError,
    wait_healthy,
)
from koa_core.config import Settings
from koa_core.storage.evaluations import read_evaluations
from tests.deployments.conftest import AUTH, TIMEZONE, TINY_RETRAIN, real_prefect_yaml
from tests.prefect_server import ServeProcess

RUN_TIMEOUT_S = 300  # worker pickup, flow-run subprocess start, one epoch, two evaluations
TASK_RUNS_TIMEOUT_S = 30
RETRAIN = "retrain/retrain"
NIGHTLY = "nightly-scoring/nightly-scoring"
RETRAIN_ARTIFACT = "retrain-comparison"
KOA_DEPLOYMENTS = {
    "nightly-scoring": "flows/nightly.py:nightly_scoring",
    "retrain": "flows/retrain.py:retrain",
    "evaluate": "flows/evaluate.py:evaluate",
}
# Jobs that must never overlap: a second run while one is active is cancelled, not queued.
EXCLUSIVE = ("nightly-scoring", "retrain")


def _deployment(name: str) -> dict[str, Any]:
    return next(d for d in real_prefect_yaml()["deployments"] if d["name"] == name)


def _cron_period(cron: str) -> timedelta:
    """Gap between two consecutive firings, as Prefect's scheduler computes them."""
    schedule = ServerCronSchedule(cron=cron, timezone="UTC")
    first, second = asyncio.run(schedule.get_dates(n=2, start=datetime(2026, 1, 1, tzinfo=UTC)))
    return timedelta(seconds=(second - first).total_seconds())


def _task_run_names(flow_run_id: UUID, timeout: float = TASK_RUNS_TIMEOUT_S) -> set[str]:
    """The tasks the server recorded for a run. Task run states reach it as events over the
    flow run's authenticated websocket, then a server service writes them: poll briefly."""
    deadline = time.monotonic() + timeout
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    while True:
        with get_client(sync_client=True) as client:
            names = {
                t.name.rsplit("-", 1)[0] for t in client.read_task_runs(flow_run_filter=run_filter)
            }
        if names or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def test_prefect_yaml_is_valid_for_prefect() -> None:
    model = PrefectYamlModel.model_validate(real_prefect_yaml())
    assert {d.name: d.entrypoint for d in model.deployments} == KOA_DEPLOYMENTS


def test_runs_enter_the_checkout_named_by_the_worker_environment() -> None:
    # An absolute path here would tie every deployment to the machine that registered it.
    assert real_prefect_yaml()["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $KOA_PROJECT_DIR }}"}}
    ]


@pytest.mark.parametrize("name", sorted(KOA_DEPLOYMENTS))
def test_each_deployment_is_scheduled_on_the_koa_pool_with_a_checked_schema(name: str) -> None:
    deployment = _deployment(name)
    assert deployment["work_pool"]["name"] == WORK_POOL
    assert deployment["enforce_parameter_schema"] is True
    [schedule] = deployment["schedules"]
    assert schedule["timezone"] == "{{ $KOA_TIMEZONE }}"
    expected = timedelta(days=1) if name == "nightly-scoring" else timedelta(weeks=1)
    assert _cron_period(schedule["cron"]) == expected


@pytest.mark.parametrize("name", EXCLUSIVE)
def test_exclusive_jobs_cancel_a_second_concurrent_run(name: str) -> None:
    assert _deployment(name)["concurrency_limit"] == {
        "limit": 1,
        "collision_strategy": "CANCEL_NEW",
    }


def test_nightly_scores_yesterday_with_the_champion_by_default() -> None:
    assert _deployment("nightly-scoring")["parameters"] == {
        "batch_date": None,
        "source": None,
        "model": "champion",
    }


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service = PrefectService(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(PrefectServiceError, match="already in use"):
            service.start_server()
    assert not service.log_dir.exists()


def test_a_server_that_dies_fails_the_health_wait_with_its_log(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "print('database is locked'); raise SystemExit(3)"], stdout=log
        )
    with pytest.raises(PrefectServiceError, match=r"exited with 3:\n.*database is locked"):
        wait_healthy(proc, "http://127.0.0.1:9/api", log_path, timeout=60)


@pytest.mark.slow
def test_serve_registers_every_deployment_of_the_real_prefect_yaml(
    koa_serve: ServeProcess,
) -> None:
    with get_client(sync_client=True) as client:
        deployed = client.read_deployments()
    assert {d.name: d.entrypoint for d in deployed} == KOA_DEPLOYMENTS
    for deployment in deployed:
        assert deployment.work_pool_name == WORK_POOL
        assert deployment.enforce_parameter_schema
        assert deployment.pull_steps == real_prefect_yaml()["pull"]  # left unresolved
        [schedule] = deployment.schedules
        assert isinstance(schedule.schedule, CronSchedule)
        assert schedule.schedule.cron == _deployment(deployment.name)["schedules"][0]["cron"]
        assert schedule.schedule.timezone == TIMEZONE


@pytest.mark.slow
def test_the_service_s_api_answers_only_with_the_password(koa_serve: ServeProcess) -> None:
    # The work pool, the deployments and the worker above all got in: they sent it too.
    url = f"{koa_serve.api_url}/deployments/filter"
    assert httpx.post(url, json={}, timeout=30).status_code == 401
    user, password = AUTH.split(":", 1)
    assert httpx.post(url, json={}, auth=(user, password), timeout=30).is_success


@pytest.mark.slow
def test_nightly_keeps_its_concurrency_settings_on_the_server(koa_serve: ServeProcess) -> None:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(NIGHTLY)
    assert deployment.parameters == _deployment("nightly-scoring")["parameters"]
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy == "CANCEL_NEW"


@pytest.mark.slow
def test_a_triggered_retrain_completes_with_its_artifact_and_evaluations_row(
    koa_serve: ServeProcess,
) -> None:
    flow_run = run_deployment(RETRAIN, parameters=TINY_RETRAIN, timeout=RUN_TIMEOUT_S)
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    [report] = [a for a in artifacts if a.key == RETRAIN_ARTIFACT]
    assert "# Retrain: challenger" in str(report.data)
    assert _task_run_names(flow_run.id), "no task run reached the server"
    # The worker's KOA_HOME is the serve home: the row landed in its results, keyed by the run.
    rows = read_evaluations(Settings(home=koa_serve.home).results_dir).to_pylist()
    # A champion from an earlier run of this server is evaluated alongside, if there is one.
    roles = sorted(r["role"] for r in rows if r["evaluation_id"] == str(flow_run.id))
    assert roles in (["challenger"], ["challenger", "champion"])


@pytest.mark.slow
def test_the_server_rejects_parameters_that_break_the_flow_signature(
    koa_serve: ServeProcess,
) -> None:
    with pytest.raises(PrefectHTTPStatusError, match="409"):
        run_deployment(RETRAIN, parameters={"epochs": "many"}, timeout=0)
