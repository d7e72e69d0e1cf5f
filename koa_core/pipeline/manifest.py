"""The batch manifest: one row per input file, from a header-only read (no pixel decode).

The manifest is on every night's critical path (no image is decoded before the whole batch
is checked), so it reads headers only: the content hash is taken where the file is read in
full anyway (``koa_core.pipeline.prepare``), or for remote sources while they were staged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from koa_core.config import get_settings
from koa_core.errors import ImageReadError
from koa_core.io.header_evidence import header_verdict
from koa_core.io.reader import read_metadata
from koa_core.storage.files import file_sha256

# Why a file could not be read: set by the manifest (header) and by ``prepare`` (pixels).
READ_ERROR_DETAIL = "read_error_detail"


def content_sha256(path: Path) -> str | None:
    """``file_sha256``, or None for a file over ``max_file_bytes`` (it is refused unread:
    hashing a 64 GiB sparse file, which costs no disk, would take minutes).

    Raises:
        OSError: the file cannot be read.
    """
    if path.stat().st_size > get_settings().max_file_bytes:
        return None
    return file_sha256(path)


def manifest_row(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """Header metadata and size of one file; ``read_error`` names why it cannot be used.

    A file whose header cannot be read still gets a row (with ``read_error`` and
    ``read_error_detail`` set) so it is quarantined, never dropped. ``sha256`` is the
    content hash when the caller already knows it (a staged download), else None.
    """
    row: dict[str, Any] = {"source_path": str(path), "size_bytes": None, "sha256": sha256}
    try:
        row["size_bytes"] = path.stat().st_size
    except OSError as error:
        return {**row, "read_error": "unreadable", READ_ERROR_DETAIL: str(error)}
    try:
        meta = read_metadata(path)
    except ImageReadError as error:
        return {**row, "read_error": error.reason, READ_ERROR_DETAIL: error.detail}
    metadata = meta.to_row()
    del metadata["path"]
    verdict = header_verdict(meta, get_settings())
    evidence = {
        "body_part_verdict": verdict.body_part,
        "body_part_evidence": verdict.body_part_evidence,
        "view_verdict": verdict.view,
        "view_evidence": verdict.view_evidence,
    }
    return {**row, **metadata, **evidence, "read_error": None, READ_ERROR_DETAIL: None}


def build_manifest(
    paths: list[Path], hashes: list[str | None] | None = None
) -> list[dict[str, Any]]:
    """Manifest rows for ``paths``, in the order given (``hashes``: known content hashes)."""
    known = hashes if hashes is not None else [None] * len(paths)
    return [manifest_row(path, sha256) for path, sha256 in zip(paths, known, strict=True)]


def with_sha256(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each missing ``sha256`` taken from its ``source_path``; unreadable
    files keep None (their row already says why they failed)."""
    return [{**row, "sha256": row.get("sha256") or _hash_or_none(row)} for row in rows]


def _hash_or_none(row: dict[str, Any]) -> str | None:
    try:
        return content_sha256(Path(row["source_path"]))
    except OSError:
        return None
