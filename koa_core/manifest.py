"""The batch manifest: one row per input file, from a header-only read (no pixel decode)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from koa_core.config import get_settings
from koa_core.errors import ImageReadError
from koa_core.io.reader import read_metadata


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content, streamed (files can be hundreds of MB)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def manifest_row(path: Path) -> dict[str, Any]:
    """Header metadata, size and content hash of one file; ``read_error`` names why not.

    A file whose header cannot be read still gets a row (with ``read_error`` and
    ``read_error_detail`` set) so it is quarantined, never dropped.
    """
    row: dict[str, Any] = {"source_path": str(path), "size_bytes": None, "sha256": None}
    try:
        row["size_bytes"] = path.stat().st_size
        # An oversized file (a 64 GiB sparse one costs no disk) is refused unread below:
        # hashing it first would take minutes.
        if row["size_bytes"] <= get_settings().max_file_bytes:
            row["sha256"] = file_sha256(path)
    except OSError as error:
        return {**row, "read_error": "unreadable", "read_error_detail": str(error)}
    try:
        meta = read_metadata(path)
    except ImageReadError as error:
        return {**row, "read_error": error.reason, "read_error_detail": error.detail}
    metadata = meta.to_row()
    del metadata["path"]
    return {**row, **metadata, "read_error": None, "read_error_detail": None}


def build_manifest(paths: list[Path]) -> list[dict[str, Any]]:
    """Manifest rows for ``paths``, in the order given."""
    return [manifest_row(path) for path in paths]
