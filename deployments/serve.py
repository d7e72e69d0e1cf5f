"""The local Prefect service behind ``koa serve``: server, work pool, deployments and a worker."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

import httpx
import psutil

from deployments.access import configured_auth, guard_exposure, is_loopback, with_auth
from koa_core.config import get_settings
from koa_core.errors import KoaError

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORK_POOL = "koa"
HEALTH_TIMEOUT_S = 90.0
CLI_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 20.0
# Prefect's default is 10 s: a run started from the UI would sit in Scheduled that long.
WORKER_QUERY_SECONDS = 2
LOG_TAIL_CHARS = 3000
# serve() prints this, then the UI address, once every part is up.
READY_PREFIX = "koa: Prefect UI at"
# The worker and the CLI calls reach a wildcard bind through loopback.
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class PrefectServiceError(KoaError):
    """A part of the local Prefect service failed to start or died; carries its log tail."""


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else ""


def prefect_command(*args: str) -> list[str]:
    """The ``prefect`` CLI of this interpreter's environment, never one found first on PATH."""
    return [sys.executable, "-m", "prefect", *args]


def url_host(host: str) -> str:
    """``host`` as the authority of a URL a client can connect to (IPv6 in brackets)."""
    host = _WILDCARD_TO_LOOPBACK.get(host, host)
    return f"[{host}]" if ":" in host else host


def service_env(
    home: Path, api_url: str, project_dir: Path, timezone: str, auth: str | None = None
) -> dict[str, str]:
    """Environment shared by the server, the CLI calls, the worker and so every flow run.

    Args:
        home: koa data root; Prefect's SQLite database lives in ``home/prefect``.
        api_url: The server's API root, e.g. ``http://127.0.0.1:4200/api``.
        project_dir: Checkout holding ``flows/``; the deployments' pull step enters it.
        timezone: IANA zone the schedules in ``prefect.yaml`` run in.
        auth: ``user:password`` the server requires and every client sends; None for none.
    """
    return {
        **with_auth(os.environ, auth),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": api_url,
        # Relative: a browser on another machine reaches the API where it loaded the UI from.
        "PREFECT_UI_API_URL": "/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # A local, often offline, service: no upgrade banners in the UI.
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
        "KOA_HOME": str(home),
        "KOA_PROJECT_DIR": str(project_dir),
        "KOA_TIMEZONE": timezone,
    }


def start_process(
    command: Sequence[str], env: dict[str, str], log: IO[bytes], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-lived child in its own session, so Ctrl-C reaches only us and we stop it."""
    return subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate a child's process group and every descendant, then kill what outlives ``timeout``.

    Descendants are listed first and signalled one by one because Prefect starts each flow run
    in a session of its own, out of reach of the group signal.
    """
    descendants: list[psutil.Process] = []
    if proc.poll() is None:
        with suppress(psutil.NoSuchProcess):
            descendants = psutil.Process(proc.pid).children(recursive=True)
    # Already-gone processes are fine at every step: they exited between listing and signal.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    for child in descendants:
        with suppress(psutil.NoSuchProcess):
            child.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _, alive = psutil.wait_procs(descendants, timeout=timeout)
    for leftover in alive:
        with suppress(psutil.NoSuchProcess):
            leftover.kill()


def _ensure_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn does: a port left in TIME_WAIT by a stopped server is free to reuse.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PrefectServiceError(
                f"{host}:{port} is already in use (another koa serve?): choose another port"
            ) from exc


def wait_healthy(
    proc: subprocess.Popen[bytes], api_url: str, log_path: Path, timeout: float = HEALTH_TIMEOUT_S
) -> None:
    """Poll ``/api/health`` until the server answers; fail early if it exits.

    Raises:
        PrefectServiceError: The server exited, or did not answer within ``timeout`` seconds;
            the message ends with the server log's tail.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PrefectServiceError(
                f"Prefect server exited with {proc.returncode}:\n{_tail(log_path)}"
            )
        try:
            if httpx.get(f"{api_url}/health", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.25)
    raise PrefectServiceError(
        f"Prefect server not healthy at {api_url} after {timeout:.0f} s:\n{_tail(log_path)}"
    )


def run_cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    """Run one ``prefect`` CLI command to completion and return its output.

    Raises:
        PrefectServiceError: The command failed or ran past ``CLI_TIMEOUT_S``.
    """
    try:
        done = subprocess.run(
            prefect_command(*args),
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PrefectServiceError(f"prefect {' '.join(args)} timed out") from exc
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise PrefectServiceError(
            f"prefect {' '.join(args)} exited with {done.returncode}:\n{output[-LOG_TAIL_CHARS:]}"
        )
    return output


class PrefectService:
    """A Prefect server with its SQLite database under the data root, the ``koa`` process work
    pool, the deployments of a ``prefect.yaml`` and one worker polling that pool.

    Use it as a context manager: whatever started is stopped on exit, a failed start included,
    the worker before the server.

    Raises:
        ServerAuthError: On construction, if ``host`` is not loopback and ``auth`` is None, or
            ``auth`` is malformed or weak (see ``deployments.access``).
    """

    def __init__(
        self,
        home: Path,
        host: str = "127.0.0.1",
        port: int = 4200,
        *,
        project_dir: Path = PROJECT_DIR,
        prefect_file: Path | None = None,
        timezone: str = "UTC",
        auth: str | None = None,
    ) -> None:
        guard_exposure(host, auth)
        self.home = home.resolve()
        self.host, self.port = host, port
        self.auth = auth
        self.url = f"http://{url_host(host)}:{port}"
        self.api_url = f"{self.url}/api"
        self.project_dir = project_dir.resolve()
        self.prefect_file = (prefect_file or self.project_dir / "prefect.yaml").resolve()
        self.log_dir = self.home / "prefect" / "logs"
        self.env = service_env(self.home, self.api_url, self.project_dir, timezone, auth)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        """Start the server, create the work pool, register the deployments, start a worker."""
        self.start_server()
        self.create_work_pool()
        self.deploy()
        self.start_worker()

    def start_server(self) -> None:
        """Start the server and wait until its API is healthy.

        Raises:
            PrefectServiceError: It exited or stayed unhealthy; the message has its log tail.
        """
        # A server already on the port would answer the health check in place of ours.
        _ensure_port_free(self.host, self.port)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        server = self._spawn("server", "start", "--host", self.host, "--port", str(self.port))
        wait_healthy(server, self.api_url, self.log_dir / "server.log")

    def start_worker(self) -> None:
        """Start a worker polling the ``koa`` pool; it runs each flow run in a subprocess."""
        self._spawn("worker", "start", "--pool", WORK_POOL, "--install-policy", "never")

    def create_work_pool(self) -> None:
        """Create the ``koa`` process work pool, or reset it to its default job template."""
        run_cli(self.env, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite")

    def deploy(self) -> str:
        """Register (create or update) every deployment in the file; their pools must exist.

        Entrypoints resolve against ``project_dir``. ``KOA_PROJECT_DIR`` is kept out of this
        command's environment: ``prefect deploy`` would write its value into the pull step,
        whereas left unresolved the worker's environment decides where runs execute.

        Returns:
            The output of ``prefect deploy``.
        """
        env = {name: value for name, value in self.env.items() if name != "KOA_PROJECT_DIR"}
        return run_cli(
            env,
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(self.prefect_file),
            cwd=self.project_dir,
        )

    def check_alive(self) -> None:
        """Raise if the server or the worker has exited.

        Raises:
            PrefectServiceError: Names the process and ends with its log tail.
        """
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise PrefectServiceError(
                    f"Prefect {name} exited with {proc.returncode}:\n"
                    f"{_tail(self.log_dir / f'{name}.log')}"
                )

    def stop(self) -> None:
        """Stop the worker, then the server (reverse start order); safe to call twice."""
        for name in reversed(list(self._procs)):
            stop_process(self._procs.pop(name))

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            # Run outside the checkout: only the deployments' pull step decides where flows run.
            proc = start_process(prefect_command(name, *args), self.env, log, cwd=self.home)
        self._procs[name] = proc
        return proc

    def __enter__(self) -> PrefectService:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so ``finally`` blocks stop the children."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(
    home: Path,
    host: str = "127.0.0.1",
    port: int = 4200,
    open_browser: bool = False,
    *,
    prefect_file: Path | None = None,
) -> None:
    """Run the local Prefect service until Ctrl-C or SIGTERM, then stop it cleanly.

    The server requires basic auth when ``KOA_SERVER_AUTH`` or ``PREFECT_SERVER_API_AUTH_STRING``
    is set; it must be to bind anything but loopback.

    Args:
        home: koa data root (``Settings().home``); Prefect's database goes to ``home/prefect``.
        host: Interface the server binds: loopback, or any other with an auth string set.
        port: Server and UI port.
        open_browser: Open the UI in the default browser once everything is up.
        prefect_file: Deployments to register (default: the checkout's ``prefect.yaml``).

    Raises:
        ServerAuthError: Before anything starts: ``host`` is not loopback and no auth string is
            set, or the one set is weak or malformed.
        PrefectServiceError: A part failed to start or died while serving.
    """
    settings = get_settings()
    koa_auth = settings.server_auth.get_secret_value() if settings.server_auth else None
    auth = configured_auth(koa_auth, os.environ)
    service = PrefectService(
        home, host, port, prefect_file=prefect_file, timezone=settings.timezone, auth=auth
    )
    with _sigterm_as_interrupt():
        try:
            with service:
                print(f"{READY_PREFIX} {service.url} (logs: {service.log_dir})", flush=True)
                if not is_loopback(host):
                    print(f"koa: listening on {host}, basic auth required", flush=True)
                print("koa: Ctrl-C stops the worker and the server", flush=True)
                if open_browser:
                    webbrowser.open(service.url)
                while True:
                    service.check_alive()
                    time.sleep(1.0)
        except KeyboardInterrupt:
            print("koa: Prefect service stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m deployments.serve [--home DIR] [--port N] [--open] ...``."""
    parser = argparse.ArgumentParser(description="Run koa's local Prefect service.")
    parser.add_argument("--home", type=Path, default=None, help="data root (default: KOA_HOME)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--open", action="store_true", help="open the UI in a browser")
    parser.add_argument("--prefect-file", type=Path, default=None, help="default: prefect.yaml")
    args = parser.parse_args(argv)
    home = args.home or get_settings().home
    try:
        serve(home, args.host, args.port, args.open, prefect_file=args.prefect_file)
    except KoaError as error:
        parser.exit(2, f"koa: error: {error}\n")


if __name__ == "__main__":
    main()
