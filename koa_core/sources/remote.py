"""Batches in any fsspec filesystem (``memory://``, ``s3://``, ...), staged before reading."""

from __future__ import annotations

import posixpath
from datetime import date
from pathlib import Path

import fsspec

from koa_core.errors import BatchFailedError, UnsafePathError
from koa_core.sources.listing import BatchListing, RejectedFile, SourceFile, reject
from koa_core.sources.staging import stage


def pull_fsspec(
    source: str, fs: fsspec.AbstractFileSystem, root: str, batch_date: date, staging_dir: Path
) -> BatchListing:
    base = posixpath.join(root, batch_date.isoformat())
    if not fs.isdir(base):
        raise BatchFailedError(f"batch folder {fs.unstrip_protocol(base)} does not exist")
    files: list[SourceFile] = []
    rejected: list[RejectedFile] = []
    ignored: list[str] = []
    for path in sorted(fs.find(base)):
        relative = posixpath.relpath(path, base)
        url = fs.unstrip_protocol(path)
        if relative.startswith("../"):
            # Object keys may contain "..": the staged copy must stay under staging_dir.
            rejected.append(reject(url, UnsafePathError, "key leaves the batch folder"))
            continue
        if any(part.startswith(".") for part in relative.split("/")):
            ignored.append(url)
            continue

        def fetch(path: str = path) -> bytes:
            return bytes(fs.cat_file(path))

        size, digest = stage(staging_dir / relative, fetch)
        files.append(SourceFile(path=staging_dir / relative, size=size, origin=url, sha256=digest))
    return BatchListing(
        source=source,
        batch_date=batch_date,
        files=tuple(files),
        rejected=tuple(rejected),
        ignored=tuple(ignored),
        root=f"{fs.unstrip_protocol(base)}/",
    )
