"""Where a night's files come from: one entry point, the source's kind decided by its prefix."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from koa_core.sources.dicomweb import DEFAULT_BACKOFF_S, DEFAULT_RETRIES, pull_dicomweb
from koa_core.sources.listing import BatchListing, list_batch
from koa_core.sources.remote import pull_fsspec

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
        return pull_dicomweb(source, url, batch_date, staging_dir, retries, backoff_s)
    if "://" not in source:
        return list_batch(source, batch_date)
    fs, root = fsspec.core.url_to_fs(source)
    if isinstance(fs, LocalFileSystem):
        return list_batch(root, batch_date)
    return pull_fsspec(source, fs, root, batch_date, staging_dir)
