"""`koa score` and `koa demo` as a person runs them: quiet, logged to a file, prompt to exit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO

import pandas as pd
import pytest

from koa_core.config import get_settings
from koa_core.phantom import write_nightly_batch
from tests.flows.models import register_tiny_champion

pytestmark = pytest.mark.slow

INPUT_SIZE = 64
REPO = Path(__file__).resolve().parents[2]
# Long enough for a temporary Prefect server on a fresh database and a small night.
COMMAND_TIMEOUT_S = 420


@dataclass
class Run:
    """What a command printed, line by line, with the second each line arrived."""

    lines: list[tuple[float, str, str]] = field(default_factory=list)
    exited_at: float = 0.0
    returncode: int | None = None

    def text(self) -> str:
        return "\n".join(line for _, _, line in self.lines)

    def arrival(self, prefix: str) -> float:
        """When the first line starting with ``prefix`` arrived."""
        return next(t for t, _, line in self.lines if line.startswith(prefix))

    def printed(self, prefix: str) -> str:
        return next(line for _, _, line in self.lines if line.startswith(prefix))


def _collect(stream: IO[str], name: str, run: Run, start: float) -> None:
    for line in stream:
        run.lines.append((time.monotonic() - start, name, line.rstrip("\n")))


def run_koa(*args: str, home: Path) -> Run:
    """``python -m koa_core ARGS`` with its own data root and no Prefect server configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        KOA_HOME=str(home),
        KOA_INPUT_SIZE=str(INPUT_SIZE),
        KOA_CHUNK_SIZE="4",
        # A database of the test's own: the temporary server must not share the user's.
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    run = Run()
    start = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "koa_core", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    readers = [
        threading.Thread(target=_collect, args=(pipe, name, run, start))
        for pipe, name in ((child.stdout, "stdout"), (child.stderr, "stderr"))
    ]
    for reader in readers:
        reader.start()
    try:
        run.returncode = child.wait(timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    run.exited_at = time.monotonic() - start
    for reader in readers:
        reader.join()
    return run


def assert_quiet_and_prompt(run: Run) -> Path:
    """Checks both commands share; returns the log file the summary names."""
    assert run.returncode == 0, run.text()
    assert "Error logging to API" not in run.text()
    assert not [line for _, _, line in run.lines if "distributed." in line or "INFO" in line]
    assert run.exited_at - run.arrival("log: ") <= 10.0, run.lines
    log_file = Path(run.printed("log: ").removeprefix("log: "))
    assert log_file.is_relative_to(get_settings().home.resolve() / "logs")
    logged = log_file.read_text(encoding="utf-8")
    # INFO records of this process (Prefect, the scheduler) and of the Dask workers.
    assert "prefect.flow_runs: Finished in state Completed()" in logged
    assert "Dask Worker process (from Nanny) distributed.worker: " in logged
    return log_file


def test_score_exits_within_seconds_of_its_summary() -> None:
    home = get_settings().home
    register_tiny_champion(INPUT_SIZE)
    night = date(2024, 3, 1)
    files = write_nightly_batch(home / "incoming", 6, seed=3, batch_date=night, size_px=(300, 400))

    run = run_koa(
        "score", "--source", str(home / "incoming"), "--batch-date", str(night), home=home
    )

    assert_quiet_and_prompt(run)
    assert run.printed("results: ") == f"results: {home.resolve() / 'results'}"
    scores = pd.read_parquet(home / "results" / "scores")
    assert len(scores) == len(files) and set(scores["batch_date"]) == {night}


def test_demo_prints_a_short_summary_and_a_query_that_runs_as_printed() -> None:
    home = get_settings().home
    register_tiny_champion(INPUT_SIZE)
    # The demo's own night takes minutes to write here; a small one stands in for it.
    yesterday = date.today() - timedelta(days=1)
    files = write_nightly_batch(
        home / "incoming", 6, seed=4, batch_date=yesterday, size_px=(300, 400)
    )

    run = run_koa("demo", home=home)

    assert_quiet_and_prompt(run)
    assert len(run.lines) <= 40, run.text()
    (query,) = [line.strip() for _, _, line in run.lines if line.strip().startswith(sys.executable)]
    printed = subprocess.run(
        query, shell=True, cwd="/", capture_output=True, text=True, timeout=60, check=False
    )
    assert printed.returncode == 0, printed.stderr
    assert "kl_grade" in printed.stdout and "mean_p_koa" in printed.stdout
    # duckdb's box rows: │ kl_grade │ knees │ films │ mean_p_koa │ (header, types, one per grade)
    cells = [row.split("│")[1:5] for row in printed.stdout.splitlines() if row.count("│") == 5]
    # One-knee images: a knee per file.
    assert sum(int(knees) for _, knees, _, _ in cells if knees.strip().isdigit()) == len(files)
