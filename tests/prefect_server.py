"""A real Prefect server, or the whole ``koa serve`` service, for tests: own port, own SQLite.

Both start on a free loopback port with Prefect's database under a test directory and are
stopped by PID, with every descendant, whatever the test did.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.serve import PROJECT_DIR, READY_PREFIX, PrefectService

SERVICE_START_TIMEOUT_S = 240.0
SERVICE_STOP_TIMEOUT_S = 90.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def prefect_server(home: Path) -> Iterator[PrefectService]:
    """A bare Prefect server (no pool, no worker); its client settings point at it inside."""
    service = PrefectService(home, port=free_port())
    try:
        service.start_server()
        with temporary_settings({PREFECT_API_URL: service.api_url}):
            yield service
    finally:
        service.stop()


@dataclass(frozen=True)
class ServeProcess:
    """A running ``python -m deployments.serve``: ``url`` is the UI, ``api_url`` its API."""

    url: str
    api_url: str
    port: int
    pid: int
    home: Path
    output: Path


def _wait_ready(proc: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = output.read_text(errors="replace")
        if READY_PREFIX in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"koa serve exited with {proc.returncode}:\n{text[-4000:]}")
        time.sleep(0.25)
    raise RuntimeError(
        f"koa serve not ready after {SERVICE_START_TIMEOUT_S:.0f} s:\n"
        f"{output.read_text(errors='replace')[-4000:]}"
    )


def _stop_serve(proc: subprocess.Popen[bytes]) -> str | None:
    """SIGTERM, as a service manager would send; returns what went wrong, if anything.

    Whatever is left of the process tree afterwards is killed, so nothing outlives the test.
    """
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return f"koa serve had already exited with {proc.wait()}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=SERVICE_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, survivors = psutil.wait_procs(family[1:], timeout=5)
    for survivor in survivors:
        survivor.kill()
    if proc.returncode != 0 or survivors:
        return (
            f"koa serve exited with {proc.returncode} after SIGTERM; "
            f"killed survivors {[p.pid for p in survivors]}"
        )
    return None


@contextmanager
def serve_process(
    home: Path, prefect_file: Path, extra_env: dict[str, str] | None = None
) -> Iterator[ServeProcess]:
    """Run the real ``koa serve`` entry point in a subprocess until the block ends.

    On exit it sends SIGTERM and raises if the service did not stop cleanly: exit status 0 and
    no process of its tree left (survivors are killed first).
    """
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    output = home / "serve.out"
    env = {**os.environ, **(extra_env or {})}
    command = [sys.executable, "-m", "deployments.serve", "--home", str(home)]
    command += ["--port", str(port), "--prefect-file", str(prefect_file)]
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(proc, output)
        url = f"http://127.0.0.1:{port}"
        with temporary_settings({PREFECT_API_URL: f"{url}/api"}):
            yield ServeProcess(url, f"{url}/api", port, proc.pid, home, output)
    except BaseException:
        _stop_serve(proc)  # the test's own error is the one to report
        raise
    if problem := _stop_serve(proc):
        raise RuntimeError(problem)
