"""Durable files: atomic replace with fsync, append-only lines, and SHA-256 of content.

A file is written to a temporary name in its own directory, fsynced and ``os.replace``d
into place, then the directory entry is fsynced, so a crash leaves the old file or the
whole new one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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
    fsync_directory(path.parent)


def atomic_write_json(path: Path, document: Mapping[str, Any]) -> None:
    """``document`` as indented JSON, written with ``atomic_write_bytes``."""
    atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode())


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable: the entry itself must reach the disk."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def append_json_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line, durably.

    One ``write()`` on an ``O_APPEND`` descriptor: concurrent writers never interleave.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (json.dumps(record) + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every record ``append_json_line`` wrote to ``path``, oldest first ([] if none)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content, streamed (files can be hundreds of MB)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
