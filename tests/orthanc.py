"""A real Orthanc DICOMweb server for tests: started as a plain process, stopped by PID."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ORTHANC_BIN = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class OrthancServer:
    """A running Orthanc: ``url`` is its REST root, ``dicomweb_url`` its DICOMweb root."""

    url: str
    dicomweb_url: str
    pid: int
    log_path: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_config(workdir: Path, port: int, overwrite: bool) -> Path:
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "koa-test",
        "HttpPort": port,
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        # The DICOM port would bind every interface: tests only need HTTP on loopback.
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        # Orthanc keeps the first instance of a SOPInstanceUID unless told to replace it.
        "OverwriteInstances": overwrite,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
            )
        try:
            if requests.get(f"{url}/system", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass  # not listening yet: poll again
        time.sleep(0.05)
    raise RuntimeError(
        f"Orthanc not ready after {STARTUP_TIMEOUT_S} s: {log_path.read_text()[-2000:]}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def run_orthanc(
    workdir: Path, port: int | None = None, overwrite: bool = False
) -> Iterator[OrthancServer]:
    """Start Orthanc with the DICOMweb plugin on a loopback port; stop it on exit.

    ``port`` defaults to a free one; pass an earlier server's port and ``workdir`` to
    restart it with its storage. ``overwrite`` sets ``OverwriteInstances`` (a re-sent
    SOP instance replaces the stored one). Skips the calling test when Orthanc or its
    DICOMweb plugin is not installed (Debian packages ``orthanc`` and ``orthanc-dicomweb``).
    """
    if ORTHANC_BIN is None or not DICOMWEB_PLUGIN.exists():
        pytest.skip(
            "Orthanc with the DICOMweb plugin is not installed (apt: orthanc orthanc-dicomweb)"
        )
    port = port or _free_port()
    config = _write_config(workdir, port, overwrite)
    log_path = workdir / "orthanc.log"
    if log_path.exists():  # a restart: keep the earlier run's log beside it
        log_path.rename(workdir / f"orthanc.{time.time_ns()}.log")
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([ORTHANC_BIN, str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, url, log_path)
        yield OrthancServer(
            url=url, dicomweb_url=f"{url}/dicom-web", pid=proc.pid, log_path=log_path
        )
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """One Orthanc per test module (register with ``pytest_plugins = ["tests.orthanc"]``)."""
    with run_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
