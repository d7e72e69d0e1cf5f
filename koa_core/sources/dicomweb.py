"""Batches from a PACS over DICOMweb: QIDO-RS finds the night's knee images, WADO-RS stages them."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from koa_core.errors import BatchFailedError, ImageReadError, NotDicomError, UnsafePathError
from koa_core.sources.listing import BatchListing, RejectedFile, SourceFile, reject
from koa_core.sources.staging import stage

KNEE_MODALITIES = ("DX", "CR")  # (0008,0060): one QIDO search each; list matching is optional
KNEE_BODY_PART = "KNEE"  # (0018,0015) BodyPartExamined
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5
HTTP_TIMEOUT_S = 60.0
_QIDO_FIELDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)  # as stored: no server-side transcoding


def pull_dicomweb(
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
            rejected.append(reject(origin, UnsafePathError, "invalid UID from QIDO-RS"))
            continue
        try:
            size, digest = stage(
                staging_dir / f"{sop}.dcm", _wado_fetcher(client, study, series, sop)
            )
        except InvalidDicomError as exc:
            rejected.append(reject(origin, NotDicomError, str(exc)))
            continue
        except requests.HTTPError as exc:
            if exc.response is None or exc.response.status_code >= 500:
                raise BatchFailedError(f"WADO-RS {origin}: {exc}") from exc
            rejected.append(reject(origin, ImageReadError, f"WADO-RS: {exc}"))
            continue
        except requests.RequestException as exc:
            raise BatchFailedError(f"WADO-RS {origin}: {exc}") from exc
        files.append(
            SourceFile(path=staging_dir / f"{sop}.dcm", size=size, origin=origin, sha256=digest)
        )
    return BatchListing(
        source=source,
        batch_date=batch_date,
        files=tuple(files),
        rejected=tuple(rejected),
        root=f"{url}/",
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
