"""Batch sources: list or stage one night's radiographs from a folder, an fsspec URL or DICOMweb."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import fsspec
import pydicom
import requests
from dicomweb_client import DICOMwebClient
from fsspec.implementations.local import LocalFileSystem
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from koa_core.config import Settings
from koa_core.errors import (
    BatchFailedError,
    ImageReadError,
    NotDicomError,
    OutputWriteError,
    UnsafePathError,
)

# ``source`` syntax, decided by its prefix:
#
# * ``/data/incoming`` or ``file:///data/incoming``: a local folder with one sub-folder per
#   batch date (``incoming/YYYY-MM-DD/...``, any depth). Files are read in place.
# * ``memory://...``, ``s3://...`` or any other fsspec URL: the same layout; files are
#   copied into the run's staging dir first.
# * ``dicomweb+http://host:port/dicom-web`` (or ``dicomweb+https://``; plain ``http(s)://``
#   means the same, as fsspec's HTTP listing is no batch folder): QIDO-RS finds the batch's
#   knee radiographs, WADO-RS stages each as ``<staging_dir>/<SOPInstanceUID>.dcm``.
#
# Every file found ends up either in ``BatchListing.files`` (to be read, then scored or
# quarantined) or in ``BatchListing.rejected`` (to be quarantined as is). Only hidden names
# (``.DS_Store``, koa's own ``.*.tmp`` files) are skipped; they are listed in ``ignored``.

DICOMWEB_PREFIXES = ("dicomweb+http://", "dicomweb+https://", "http://", "https://")
KNEE_MODALITIES = ("DX", "CR")  # (0008,0060): one QIDO search each; list matching is optional
KNEE_BODY_PART = "KNEE"  # (0018,0015) BodyPartExamined
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5
HTTP_TIMEOUT_S = 60.0
_QIDO_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_LEAVES_ROOT = "symlink leaves the batch folder (or loops)"
_ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)  # as stored: no server-side transcoding


@dataclass(frozen=True)
class SourceFile:
    """One input ready to read: ``path`` is local; ``origin`` is where it came from.

    ``origin`` (the path in the batch folder, the fsspec URL or the WADO-RS URL) is what
    results should record as ``source_path``: staging paths change between runs.
    ``sha256`` is known for staged copies and ``None`` for files read in place.
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
    """Everything one batch holds, sorted by origin so reruns process files in one order."""

    source: str
    batch_date: date
    files: tuple[SourceFile, ...]
    rejected: tuple[RejectedFile, ...] = ()
    ignored: tuple[str, ...] = field(default=())


def staging_dir_for(batch_date: date, settings: Settings) -> Path:
    """The run folder's staging dir: ``<runs_dir>/<YYYY-MM-DD>/staged``."""
    return settings.runs_dir / batch_date.isoformat() / "staged"


def pull_batch(
    source: str,
    batch_date: date,
    staging_dir: Path,
    *,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> BatchListing:
    """List one batch, staging remote files locally (``source`` syntax: see the top of this module).

    Staging is idempotent: a file already staged with the recorded size and SHA-256 is
    not fetched again, so a retried or re-run pull only downloads what is missing.

    Args:
        source: Folder path, fsspec URL or DICOMweb URL.
        batch_date: The night to pull.
        staging_dir: Where remote files are staged (unused for local folders).
        retries: Extra attempts per HTTP request on connection errors, timeouts and
            HTTP 408/429/5xx, with exponential backoff.
        backoff_s: Backoff factor of those retries, in seconds.

    Returns:
        The batch's files and rejected inputs.

    Raises:
        BatchFailedError: The source or its batch folder is missing, or the DICOMweb
            server stays unreachable or failing after the retries.
        OutputWriteError: A staged file could not be written.
    """
    if source.startswith(DICOMWEB_PREFIXES):
        url = source.removeprefix("dicomweb+")
        return _pull_dicomweb(source, url, batch_date, staging_dir, retries, backoff_s)
    if "://" not in source:
        return list_batch(source, batch_date)
    fs, root = fsspec.core.url_to_fs(source)
    if isinstance(fs, LocalFileSystem):
        return list_batch(root, batch_date)
    return _pull_fsspec(source, fs, root, batch_date, staging_dir)


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
                rejected.append(_rejected(link, UnsafePathError, _LEAVES_ROOT))
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
    )


def _classify(
    path: Path, root: Path, files: list[SourceFile], rejected: list[RejectedFile]
) -> None:
    if path.is_symlink() and not _inside(path, root):
        rejected.append(_rejected(path, UnsafePathError, _LEAVES_ROOT))
        return
    target = path.resolve()
    try:
        info = target.stat()
    except FileNotFoundError:
        rejected.append(_rejected(path, ImageReadError, "dangling symlink"))
        return
    if not stat.S_ISREG(info.st_mode):
        rejected.append(_rejected(path, UnsafePathError, "not a regular file"))
        return
    files.append(SourceFile(path=target, size=info.st_size, origin=str(path)))


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except RuntimeError:  # a symlink loop (Python 3.11 raises RuntimeError, not OSError)
        return False


def _rejected(path: Path | str, error: type[ImageReadError], detail: str) -> RejectedFile:
    return RejectedFile(origin=str(path), reason=error.reason, detail=detail)


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


def _pull_fsspec(
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
            rejected.append(_rejected(url, UnsafePathError, "key leaves the batch folder"))
            continue
        if any(part.startswith(".") for part in relative.split("/")):
            ignored.append(url)
            continue

        def fetch(path: str = path) -> bytes:
            return bytes(fs.cat_file(path))

        size, digest = _stage(staging_dir / relative, fetch)
        files.append(SourceFile(path=staging_dir / relative, size=size, origin=url, sha256=digest))
    return BatchListing(
        source=source,
        batch_date=batch_date,
        files=tuple(files),
        rejected=tuple(rejected),
        ignored=tuple(ignored),
    )


def _stage(dest: Path, fetch: Callable[[], bytes]) -> tuple[int, str]:
    """Fetch into ``dest`` unless a verified copy is there; returns (size, sha256)."""
    sidecar = dest.with_name(f".{dest.name}.sha256")
    cached = _verified(dest, sidecar)
    if cached is not None:
        return cached
    data = fetch()
    digest = hashlib.sha256(data).hexdigest()
    _write_atomic(dest, data)
    _write_atomic(sidecar, f"{digest} {len(data)}\n".encode())
    return len(data), digest


def _verified(dest: Path, sidecar: Path) -> tuple[int, str] | None:
    try:
        digest, size = sidecar.read_text().split()
        data = dest.read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
        return None
    return len(data), digest


def _write_atomic(dest: Path, data: bytes) -> None:
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("xb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        tmp.replace(dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(dest, f"{type(exc).__name__}: {exc.strerror or exc}") from exc


def _pull_dicomweb(
    source: str, url: str, batch_date: date, staging_dir: Path, retries: int, backoff_s: float
) -> BatchListing:
    client = DICOMwebClient(
        url=url, session=_retrying_session(retries, backoff_s), timeout=HTTP_TIMEOUT_S
    )
    client.set_http_retry_params(retry=False)  # the session's urllib3 Retry bounds all attempts
    files: list[SourceFile] = []
    rejected: list[RejectedFile] = []
    for study, series, sop in _search_knee_instances(client, url, batch_date):
        origin = f"{url}/studies/{study}/series/{series}/instances/{sop}"
        if not all(UID(uid).is_valid for uid in (study, series, sop)):
            # The UID becomes a file name: a server must not pick where we write.
            rejected.append(_rejected(origin, UnsafePathError, "invalid UID from QIDO-RS"))
            continue
        try:
            size, digest = _stage(
                staging_dir / f"{sop}.dcm", _wado_fetcher(client, study, series, sop)
            )
        except InvalidDicomError as exc:
            rejected.append(_rejected(origin, NotDicomError, str(exc)))
            continue
        except requests.HTTPError as exc:
            if exc.response is None or exc.response.status_code >= 500:
                raise BatchFailedError(f"WADO-RS {origin}: {exc}") from exc
            rejected.append(_rejected(origin, ImageReadError, f"WADO-RS: {exc}"))
            continue
        except requests.RequestException as exc:
            raise BatchFailedError(f"WADO-RS {origin}: {exc}") from exc
        files.append(
            SourceFile(path=staging_dir / f"{sop}.dcm", size=size, origin=origin, sha256=digest)
        )
    return BatchListing(
        source=source, batch_date=batch_date, files=tuple(files), rejected=tuple(rejected)
    )


def _retrying_session(retries: int, backoff_s: float) -> requests.Session:
    retry = Retry(
        total=retries,
        backoff_factor=backoff_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # hand the last response back so dicomweb-client raises HTTPError
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _search_knee_instances(
    client: DICOMwebClient, url: str, batch_date: date
) -> list[tuple[str, str, str]]:
    """QIDO-RS: the batch date's DX and CR knee instances as (study, series, SOP) UIDs, sorted."""
    found: dict[str, tuple[str, str, str]] = {}
    for modality in KNEE_MODALITIES:
        filters = {
            "StudyDate": batch_date.strftime("%Y%m%d"),
            "Modality": modality,
            "BodyPartExamined": KNEE_BODY_PART,
        }
        try:
            matches = client.search_for_instances(
                search_filters=filters, fields=list(_QIDO_FIELDS), get_remaining=True
            )
        except requests.RequestException as exc:
            raise BatchFailedError(f"QIDO-RS {url} {filters}: {exc}") from exc
        for match in matches:
            ds = Dataset.from_json(match)
            uids = tuple(str(ds.get(keyword, "")) for keyword in _QIDO_FIELDS)
            found[uids[2]] = (uids[0], uids[1], uids[2])
    return [found[sop] for sop in sorted(found)]


def _wado_fetcher(client: DICOMwebClient, study: str, series: str, sop: str) -> Callable[[], bytes]:
    def fetch() -> bytes:
        instance = client.retrieve_instance(study, series, sop, media_types=_ANY_TRANSFER_SYNTAX)
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, instance, enforce_file_format=True)
        return buffer.getvalue()

    return fetch
