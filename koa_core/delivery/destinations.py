"""Where results go: STOW-RS to a DICOMweb server, or an outbox folder a router picks up.

A destination sends one instance and raises ``TransientDeliveryError`` for what may pass
on a retry (connection refused or reset, timeouts, HTTP 5xx and 429) and
``DeliveryError`` for what will not (other HTTP 4xx, a refused SOP instance, an outbox
that cannot be written). Its ``label`` is what the ``deliveries`` table records: a URL
without user or password, or the outbox's absolute path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from koa_core.errors import DeliveryError, OutputWriteError, TransientDeliveryError
from koa_core.storage.files import atomic_write_bytes

HTTP_TIMEOUT_S = 60.0
# Bodies over dicomweb-client's chunk size go out with chunked transfer encoding, which
# some Orthanc releases mishandle; one SC of a whole film is ~10-40 MB.
STOW_CHUNK_BYTES = 1 << 30
_MAX_ERROR_CHARS = 400
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class Destination(Protocol):
    """Sends one DICOM instance (``data``: its Part 10 bytes); ``label`` has no credentials."""

    @property
    def label(self) -> str: ...

    def send(self, study_instance_uid: str, sop_instance_uid: str, data: bytes) -> None: ...


def open_destination(target: str, timeout_s: float = HTTP_TIMEOUT_S) -> Destination:
    """A ``DicomWebDestination`` for an ``http(s)://`` URL, else an ``Outbox`` folder."""
    if urlsplit(target).scheme in ("http", "https"):
        return DicomWebDestination.from_url(target, timeout_s)
    return Outbox(Path(target).expanduser().absolute())


@dataclass(frozen=True)
class Outbox:
    """``<folder>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``, each written atomically.

    A file appears under its final name only when complete (temporary ``.name.*`` files
    beside it are what a router must skip), and a re-sent instance replaces its file.
    """

    folder: Path

    @property
    def label(self) -> str:
        return str(self.folder)

    def send(self, study_instance_uid: str, sop_instance_uid: str, data: bytes) -> None:
        study, sop = study_instance_uid, sop_instance_uid
        if not (UID(study).is_valid and UID(sop).is_valid):
            # The UIDs become path components: never let one climb out of the outbox.
            raise DeliveryError(f"invalid UID for an outbox path: {study!r} / {sop!r}")
        path = self.folder / study / f"{sop}.dcm"
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise DeliveryError(str(OutputWriteError(path, str(exc)))) from exc


@dataclass(frozen=True)
class DicomWebDestination:
    """STOW-RS with ``dicomweb-client``; retries are the caller's, so each try is counted."""

    url: str
    client: DICOMwebClient = field(repr=False, compare=False)

    @classmethod
    def from_url(cls, url: str, timeout_s: float = HTTP_TIMEOUT_S) -> DicomWebDestination:
        """A client for ``url``; ``user:password@`` in it becomes HTTP basic auth."""
        parts = urlsplit(url)
        session = requests.Session()
        if parts.username is not None:
            session.auth = (unquote(parts.username), unquote(parts.password or ""))
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
        netloc = f"{host}:{parts.port}" if parts.port else host
        bare = urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
        client = DICOMwebClient(
            url=bare, session=session, timeout=timeout_s, chunk_size=STOW_CHUNK_BYTES
        )
        client.set_http_retry_params(retry=False)
        return cls(url=bare, client=client)

    @property
    def label(self) -> str:
        return self.url

    def send(self, study_instance_uid: str, sop_instance_uid: str, data: bytes) -> None:
        try:  # dicomweb-client takes datasets and encodes them itself
            dataset = pydicom.dcmread(io.BytesIO(data))
            response = self.client.store_instances(datasets=[dataset])
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is None or status in TRANSIENT_STATUSES or status >= 500:
                raise TransientDeliveryError(f"STOW-RS {self.url}: {exc}") from exc
            raise DeliveryError(f"STOW-RS {self.url}: {exc}") from exc
        except _TRANSIENT_ERRORS as exc:
            detail = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
            raise TransientDeliveryError(f"STOW-RS {self.url}: {detail}") from exc
        except requests.RequestException as exc:
            raise DeliveryError(f"STOW-RS {self.url}: {exc}") from exc
        except InvalidDicomError as exc:
            raise DeliveryError(f"kept instance unreadable: {exc}") from exc
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reason = failed[0].get("FailureReason")
            raise DeliveryError(f"STOW-RS {self.url}: instance refused (FailureReason {reason})")
