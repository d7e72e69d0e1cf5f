"""A night's files as koa lists them, and the local batch folder, walked without reading."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from koa_core.errors import BatchFailedError, ImageReadError, UnsafePathError

_LEAVES_ROOT = "symlink leaves the batch folder (or loops)"


@dataclass(frozen=True)
class SourceFile:
    """One input ready to read: ``path`` is local; ``origin`` is where it came from.

    ``origin`` (the path in the batch folder, the fsspec URL or the WADO-RS URL) names the
    input for the run (staging paths change between runs); results record it relative to
    the batch (``BatchListing.relative_name``). ``sha256`` is known for staged copies and
    ``None`` for files read in place.
    """

    path: Path
    size: int
    origin: str
    sha256: str | None = None


@dataclass(frozen=True)
class RejectedFile:
    """An input that must be quarantined without reading it; ``reason`` is a stable code."""

    origin: str
    reason: str
    detail: str


@dataclass(frozen=True)
class BatchListing:
    """Everything one batch holds, sorted by origin so reruns process files in one order.

    ``root`` is the origin of the batch itself, ending in ``/``: the batch folder
    (``.../incoming/YYYY-MM-DD/``), its fsspec URL, or the DICOMweb server's root URL.
    """

    source: str
    batch_date: date
    files: tuple[SourceFile, ...]
    rejected: tuple[RejectedFile, ...] = ()
    ignored: tuple[str, ...] = field(default=())
    root: str = ""

    def relative_name(self, origin: str) -> str:
        """An input's origin after the batch's ``root`` (POSIX): its name within the batch.

        A folder or fsspec file becomes its path under ``YYYY-MM-DD/``; a DICOMweb instance
        ``studies/<uid>/series/<uid>/instances/<uid>``.
        """
        return origin.removeprefix(self.root)


def list_batch(source: str | Path, batch_date: date) -> BatchListing:
    """List a local batch folder ``<source>/<YYYY-MM-DD>/`` recursively, without reading files.

    Symlinks are resolved: one whose target lies outside the batch folder is rejected as
    ``unsafe_path`` (never followed); a file symlink inside it is listed with its target
    as ``path``; a directory symlink inside it is skipped, as its target is walked
    anyway. Dangling links and non-regular files (FIFOs, sockets, devices, which would
    block or mislead a reader) are rejected too.

    Args:
        source: The incoming folder.
        batch_date: The sub-folder to list.

    Returns:
        The batch listing; ``files`` in path order.

    Raises:
        BatchFailedError: The batch folder does not exist.
    """
    root = Path(source) / batch_date.isoformat()
    if not root.is_dir():
        raise BatchFailedError(f"batch folder {root} does not exist")
    root = root.resolve()
    files: list[SourceFile] = []
    rejected: list[RejectedFile] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        ignored += [str(here / d) for d in dirnames if d.startswith(".")]
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for link in (here / d for d in dirnames if (here / d).is_symlink()):
            if _inside(link, root):
                ignored.append(str(link))  # os.walk does not descend; the target is walked
            else:
                rejected.append(reject(link, UnsafePathError, _LEAVES_ROOT))
        ignored += [str(here / name) for name in filenames if name.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                _classify(here / name, root, files, rejected)
    return BatchListing(
        source=str(source),
        batch_date=batch_date,
        files=tuple(sorted(files, key=lambda f: f.origin)),
        rejected=tuple(sorted(rejected, key=lambda r: r.origin)),
        ignored=tuple(sorted(ignored)),
        root=f"{root}/",
    )


def _classify(
    path: Path, root: Path, files: list[SourceFile], rejected: list[RejectedFile]
) -> None:
    if path.is_symlink() and not _inside(path, root):
        rejected.append(reject(path, UnsafePathError, _LEAVES_ROOT))
        return
    target = path.resolve()
    try:
        info = target.stat()
    except FileNotFoundError:
        rejected.append(reject(path, ImageReadError, "dangling symlink"))
        return
    if not stat.S_ISREG(info.st_mode):
        rejected.append(reject(path, UnsafePathError, "not a regular file"))
        return
    files.append(SourceFile(path=target, size=info.st_size, origin=str(path)))


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except RuntimeError:  # a symlink loop (Python 3.11 raises RuntimeError, not OSError)
        return False


def reject(path: Path | str, error: type[ImageReadError], detail: str) -> RejectedFile:
    """A ``RejectedFile`` with ``error``'s stable reason code."""
    return RejectedFile(origin=str(path), reason=error.reason, detail=detail)
