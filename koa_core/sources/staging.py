"""Local copies of remote inputs: fetched once, verified by SHA-256, removed after the run."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

from koa_core.config import Settings
from koa_core.errors import OutputWriteError
from koa_core.storage.files import atomic_write_bytes, bytes_sha256


def staging_dir_for(batch_date: date, settings: Settings) -> Path:
    """The run folder's staging dir: ``<runs_dir>/<YYYY-MM-DD>/staged``."""
    return settings.runs_dir / batch_date.isoformat() / "staged"


def stage(dest: Path, fetch: Callable[[], bytes]) -> tuple[int, str]:
    """Fetch into ``dest`` unless a verified copy is there; returns (size, sha256)."""
    sidecar = dest.with_name(f".{dest.name}.sha256")
    cached = _verified(dest, sidecar)
    if cached is not None:
        return cached
    data = fetch()
    digest = bytes_sha256(data)
    _write_atomic(dest, data)
    _write_atomic(sidecar, f"{digest} {len(data)}\n".encode())
    return len(data), digest


def _verified(dest: Path, sidecar: Path) -> tuple[int, str] | None:
    try:
        digest, size = sidecar.read_text().split()
        data = dest.read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    if len(data) != int(size) or bytes_sha256(data) != digest:
        return None
    return len(data), digest


def _write_atomic(dest: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(dest, data)
    except OSError as exc:
        raise OutputWriteError(dest, f"{type(exc).__name__}: {exc.strerror or exc}") from exc


def cleanup_staging(staging_dir: Path, *, keep: bool) -> int:
    """Remove a run's staged copies unless ``keep`` (``Settings.keep_staged_files``).

    Only ever pass the staging dir of a DICOMweb or fsspec pull: local folders are read
    in place and never staged.

    Returns:
        The number of staged files removed (0 when kept or absent).
    """
    if keep or not staging_dir.is_dir():
        return 0
    removed = sum(1 for p in staging_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    shutil.rmtree(staging_dir)
    return removed
