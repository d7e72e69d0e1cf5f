"""Atomic, integrity-checked files for weights, checkpoints and cards.

A file is written to a temporary name in its own directory, fsynced and ``os.replace``d
into place, so a crash leaves the old file or the new one, never half of either. Torch
files get a ``<name>.sha256`` sidecar written after them; readers verify it, so a file
truncated or altered outside koa (a copy that stopped, a full disk) is refused instead of
loaded. A crash between the two replaces leaves a complete file whose sidecar is stale:
that is refused too, which costs one epoch on resume and never loads bad weights.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from koa_core.errors import CorruptCheckpointError

SIDECAR_SUFFIX = ".sha256"


def sidecar_path(path: Path) -> Path:
    """Where the sha256 of ``path`` is kept."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or all of the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp_name).replace(path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry itself reaches the disk.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_torch(obj: Any, path: Path) -> str:
    """``torch.save`` ``obj`` atomically with a sha256 sidecar; return the digest."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def verify_sidecar(path: Path) -> None:
    """Check ``path`` against its sha256 sidecar when it has one.

    Raises:
        CorruptCheckpointError: the file is missing or its content does not match.
    """
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: no such file")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return
    expected = sidecar.read_text(encoding="utf-8").split()[0] if sidecar.stat().st_size else ""
    with path.open("rb") as handle:
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
    if actual != expected:
        raise CorruptCheckpointError(
            f"{path}: sha256 {actual[:12]} does not match its sidecar ({expected[:12] or 'empty'});"
            " the file is truncated or was changed after it was written"
        )


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a file ``save_torch`` wrote (``weights_only=True``) after verifying its sidecar.

    Raises:
        CorruptCheckpointError: missing, truncated, corrupt or not a safe torch file.
    """
    verify_sidecar(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as error:
        raise CorruptCheckpointError(f"{path}: not a readable torch file: {error}") from error
