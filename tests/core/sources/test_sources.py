"""Tests for koa_core.sources.pull: folder, fsspec and DICOMweb (real Orthanc) batch sources."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from koa_core.errors import BatchFailedError
from koa_core.sources.listing import BatchListing, list_batch
from koa_core.sources.pull import pull_batch
from koa_core.sources.staging import cleanup_staging
from tests.orthanc import OrthancServer, run_orthanc

BATCH = date(2024, 3, 1)
OTHER_DAY = date(2024, 3, 2)
DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage


def dicom_bytes(
    modality: str = "DX", body_part: str = "KNEE", study_date: date = BATCH, seed: int = 0
) -> bytes:
    """A small, valid Part 10 radiograph (256x256, 12-bit) written by pydicom."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DX_CLASS if modality == "DX" else CR_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = f"PAT{seed:03d}"
    ds.StudyDate = study_date.strftime("%Y%m%d")
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.Rows = ds.Columns = 256
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    pixels = np.random.default_rng(seed).integers(0, 4096, (256, 256), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def raster_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((256, 256), 128, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- local folder


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    """A batch folder with mixed formats at several depths, plus files that must be skipped."""
    root = tmp_path / "incoming"
    day = root / BATCH.isoformat()
    put(day / "a.dcm", dicom_bytes(seed=1))
    put(day / "knee" / "deeper" / "IM0001", dicom_bytes(seed=2))  # DICOM with no extension
    put(day / "b.png", raster_bytes("PNG"))
    put(day / "c.jpg", raster_bytes("JPEG"))
    put(day / "cd" / "DICOMDIR", b"\0" * 128 + b"DICM")  # an input the reader will reject
    put(day / ".DS_Store", b"junk")
    put(day / ".a.dcm.0123.tmp", b"half")
    put(day / ".hidden" / "x.dcm", dicom_bytes(seed=3))
    put(root / OTHER_DAY.isoformat() / "z.dcm", dicom_bytes(seed=4))
    return root


def relative_origins(listing: BatchListing, day: Path) -> list[str]:
    return [str(Path(f.origin).relative_to(day)) for f in listing.files]


def test_folder_listing_is_recursive_sorted_and_skips_hidden(incoming: Path) -> None:
    day = incoming / BATCH.isoformat()
    listing = list_batch(incoming, BATCH)
    assert relative_origins(listing, day) == [
        "a.dcm",
        "b.png",
        "c.jpg",
        "cd/DICOMDIR",
        "knee/deeper/IM0001",
    ]
    names = [listing.relative_name(f.origin) for f in listing.files]
    assert names == relative_origins(listing, day)  # the names results record
    assert listing.rejected == ()
    assert {Path(p).name for p in listing.ignored} == {".DS_Store", ".a.dcm.0123.tmp", ".hidden"}
    for f in listing.files:
        assert f.size == f.path.stat().st_size > 0
        assert f.sha256 is None


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda day, outside: os.symlink(outside / "secret.dcm", day / "evil.dcm"), "unsafe_path"),
        (lambda day, outside: os.symlink(outside, day / "evil-dir"), "unsafe_path"),
        (lambda day, outside: os.symlink("../../etc/passwd", day / "rel.dcm"), "unsafe_path"),
        (lambda day, outside: os.symlink(day / "gone.dcm", day / "dangling.dcm"), "unreadable"),
        (lambda day, outside: os.mkfifo(day / "pipe.dcm"), "unsafe_path"),
        (lambda day, outside: os.symlink(day / "loop.dcm", day / "loop.dcm"), "unsafe_path"),
    ],
    ids=["file-outside", "dir-outside", "relative-escape", "dangling", "fifo", "loop"],
)
def test_unsafe_entries_are_rejected_not_read(
    incoming: Path, tmp_path: Path, make: Callable[[Path, Path], None], reason: str
) -> None:
    outside = put(tmp_path / "elsewhere" / "secret.dcm", dicom_bytes(seed=9)).parent
    day = incoming / BATCH.isoformat()
    make(day, outside)
    listing = list_batch(incoming, BATCH)
    assert [r.reason for r in listing.rejected] == [reason]
    assert len(listing.files) == 5
    assert not any(str(outside) in str(f.path) for f in listing.files)


def test_file_symlink_inside_the_batch_is_listed_at_its_target(incoming: Path) -> None:
    day = incoming / BATCH.isoformat()
    os.symlink(day / "a.dcm", day / "knee" / "alias.dcm")
    os.symlink(day / "knee", day / "knee-again")  # a directory link inside: walked once only
    listing = list_batch(incoming, BATCH)
    alias = next(f for f in listing.files if f.origin.endswith("alias.dcm"))
    assert alias.path == (day / "a.dcm").resolve()
    assert len(listing.files) == 6
    assert listing.rejected == ()
    assert str(day / "knee-again") in listing.ignored


def test_missing_batch_folder_fails_loudly(incoming: Path) -> None:
    with pytest.raises(BatchFailedError, match="2024-03-05"):
        pull_batch(str(incoming), date(2024, 3, 5), incoming / "staged")


def test_file_url_is_listed_in_place(incoming: Path, tmp_path: Path) -> None:
    staging = tmp_path / "staged"
    listing = pull_batch(f"file://{incoming}", BATCH, staging)
    assert [f.path for f in listing.files] == [f.path for f in list_batch(incoming, BATCH).files]
    assert listing.relative_name(listing.files[0].origin) == "a.dcm"
    assert not staging.exists()


# ---------------------------------------------------------------- fsspec


@pytest.fixture
def memory_source() -> Iterator[tuple[str, dict[str, bytes]]]:
    fs = fsspec.filesystem("memory")
    root = f"/incoming-{uuid.uuid4().hex}"
    contents = {
        "a.dcm": dicom_bytes(seed=1),
        "sub/b.png": raster_bytes("PNG"),
        "sub/IM2": dicom_bytes(seed=2),
    }
    for name, data in contents.items():
        fs.pipe_file(f"{root}/{BATCH.isoformat()}/{name}", data)
    fs.pipe_file(f"{root}/{BATCH.isoformat()}/.DS_Store", b"junk")
    fs.pipe_file(f"{root}/{OTHER_DAY.isoformat()}/c.dcm", dicom_bytes(seed=3))
    yield f"memory://{root}", contents
    fs.rm(root, recursive=True)


def test_fsspec_source_is_staged_once(
    memory_source: tuple[str, dict[str, bytes]], tmp_path: Path
) -> None:
    url, contents = memory_source
    staging = tmp_path / "runs" / BATCH.isoformat() / "staged"
    listing = pull_batch(url, BATCH, staging)

    assert [str(f.path.relative_to(staging)) for f in listing.files] == sorted(contents)
    for f in listing.files:
        data = contents[str(f.path.relative_to(staging))]
        assert f.path.read_bytes() == data
        assert f.sha256 == hashlib.sha256(data).hexdigest()
        assert f.origin.startswith("memory://") and f.origin.endswith(
            str(f.path.relative_to(staging))
        )
        assert listing.relative_name(f.origin) == str(f.path.relative_to(staging))
    assert len(listing.ignored) == 1

    inodes = {f.path: f.path.stat().st_ino for f in listing.files}
    damaged = listing.files[0].path
    damaged.write_bytes(damaged.read_bytes()[:100])  # a half copy must not count as staged
    again = pull_batch(url, BATCH, staging)
    assert again.files == listing.files
    assert damaged.read_bytes() == contents["a.dcm"]
    assert all(f.path.stat().st_ino == inodes[f.path] for f in again.files if f.path != damaged)

    assert cleanup_staging(staging, keep=True) == 0
    assert cleanup_staging(staging, keep=False) == len(contents)
    assert not staging.exists()


# ---------------------------------------------------------------- DICOMweb (real Orthanc)


@dataclass
class KneeServer:
    orthanc: OrthancServer
    knee_uids: set[str]
    pixels: dict[str, bytes] = field(default_factory=dict)


@pytest.fixture(scope="module")
def knee_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KneeServer]:
    """Orthanc holding 4 knee DX/CR on the batch date, 1 chest that day, 1 knee another day."""
    with run_orthanc(tmp_path_factory.mktemp("orthanc")) as orthanc:
        server = KneeServer(orthanc, set())
        uploads = [
            ("DX", "KNEE", BATCH, True),
            ("DX", "KNEE", BATCH, True),
            ("CR", "KNEE", BATCH, True),
            ("CR", "KNEE", BATCH, True),
            ("DX", "CHEST", BATCH, False),
            ("DX", "KNEE", OTHER_DAY, False),
        ]
        for seed, (modality, body_part, day, wanted) in enumerate(uploads):
            data = dicom_bytes(modality, body_part, day, seed=seed)
            requests.post(f"{orthanc.url}/instances", data=data, timeout=10).raise_for_status()
            ds = pydicom.dcmread(io.BytesIO(data))
            if wanted:
                server.knee_uids.add(ds.SOPInstanceUID)
                server.pixels[ds.SOPInstanceUID] = ds.PixelData
        yield server


class CountingProxy:
    """A real HTTP hop in front of Orthanc that counts requests and can answer errors instead."""

    def __init__(self, upstream: str, fail: Callable[[str, int], int | None]) -> None:
        self.requests: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.requests.append(self.path)
                status = fail(self.path, len(proxy.requests))
                if status is not None:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                reply = requests.get(
                    upstream + self.path, headers={"Accept": self.headers["Accept"]}, timeout=10
                )
                self.send_response(reply.status_code)
                self.send_header("Content-Type", reply.headers["Content-Type"])
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wado_requests(self) -> list[str]:
        return [p for p in self.requests if "/instances/" in p]

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def proxied(
    knee_server: KneeServer, fail: Callable[[str, int], int | None] = lambda path, n: None
) -> CountingProxy:
    return CountingProxy(knee_server.orthanc.url, fail)


def test_dicomweb_pulls_exactly_the_knee_radiographs(
    knee_server: KneeServer, tmp_path: Path
) -> None:
    staging = tmp_path / "runs" / BATCH.isoformat() / "staged"
    with proxied(knee_server) as proxy:
        source = f"dicomweb+{proxy.url}/dicom-web"
        listing = pull_batch(source, BATCH, staging, backoff_s=0.01)
        assert {f.path.stem for f in listing.files} == knee_server.knee_uids
        assert len(proxy.wado_requests()) == 4
        for f in listing.files:
            ds = pydicom.dcmread(f.path)
            assert ds.pixel_array.shape == (256, 256)
            assert ds.PixelData == knee_server.pixels[ds.SOPInstanceUID]
            assert f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest()
            assert listing.relative_name(f.origin) == (
                f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}"
            )

        inodes = {f.path: f.path.stat().st_ino for f in listing.files}
        again = pull_batch(source, BATCH, staging, backoff_s=0.01)
        assert len(proxy.wado_requests()) == 4, "a re-run must not download staged files again"
        assert again.files == listing.files
        assert all(f.path.stat().st_ino == inodes[f.path] for f in again.files)

    assert cleanup_staging(staging, keep=False) == 4
    assert not staging.exists()


def test_dicomweb_retries_transient_errors(knee_server: KneeServer, tmp_path: Path) -> None:
    # The first two requests fail with 503: the QIDO search must be retried, not lost.
    with proxied(knee_server, lambda path, n: 503 if n <= 2 else None) as proxy:
        listing = pull_batch(
            f"dicomweb+{proxy.url}/dicom-web", BATCH, tmp_path, retries=3, backoff_s=0.01
        )
    assert {f.path.stem for f in listing.files} == knee_server.knee_uids
    assert proxy.requests[0] == proxy.requests[1] == proxy.requests[2]  # the same search, retried
    assert len(proxy.wado_requests()) == 4


def test_dicomweb_gives_up_after_bounded_retries(knee_server: KneeServer, tmp_path: Path) -> None:
    with (
        proxied(knee_server, lambda path, n: 503) as proxy,
        pytest.raises(BatchFailedError, match="503"),
    ):
        pull_batch(f"dicomweb+{proxy.url}/dicom-web", BATCH, tmp_path, retries=2, backoff_s=0.01)
    assert len(proxy.requests) == 3  # one attempt plus two retries, then give up


def test_dicomweb_instance_gone_is_rejected_not_fatal(
    knee_server: KneeServer, tmp_path: Path
) -> None:
    gone = sorted(knee_server.knee_uids)[0]
    with proxied(knee_server, lambda path, n: 404 if path.endswith(gone) else None) as proxy:
        listing = pull_batch(f"dicomweb+{proxy.url}/dicom-web", BATCH, tmp_path, backoff_s=0.01)
    assert {f.path.stem for f in listing.files} == knee_server.knee_uids - {gone}
    assert [(r.origin.rsplit("/", 1)[1], r.reason) for r in listing.rejected] == [
        (gone, "unreadable")
    ]


def test_unreachable_dicomweb_server_fails_the_batch(tmp_path: Path) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]
    with pytest.raises(BatchFailedError, match="QIDO-RS"):
        pull_batch(
            f"dicomweb+http://127.0.0.1:{port}/dicom-web",
            BATCH,
            tmp_path,
            retries=1,
            backoff_s=0.01,
        )
