"""Hostile and odd inputs, each with the outcome koa must give it: a reason code, or scored.

``SCORED`` kinds are valid images whose only oddity is harmless (a name full of shell
metacharacters, signed pixels with a correct rescale): refusing them would lose data.
"""

from __future__ import annotations

import copy
import gzip
import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    RTStructureSetStorage,
    generate_uid,
)

from tests.dicom_factory import deflate_bomb
from tests.reliability.helpers import knee_templates

SCORED = "scored"
HUGE_SPARSE_BYTES = 64 * 2**30  # a 64 GiB file that takes no disk space
DEFLATE_BOMB_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Hostile:
    """One kind: how to write it and what koa must make of it."""

    kind: str
    expected: str
    write: Callable[[Path, Path], list[Path]]
    """(batch folder, a folder outside it) -> the batch entries written."""


def _template(tag: str) -> Dataset:
    ds = copy.deepcopy(knee_templates(1)[0])
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        setattr(ds, keyword, generate_uid(entropy_srcs=["hostile", tag, keyword]))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _valid(name: str) -> Callable[[Path, Path], list[Path]]:
    def write(folder: Path, outside: Path) -> list[Path]:
        path = folder / name
        path.write_bytes(_dicom_bytes(_template(name)))
        return [path]

    return write


def _bytes_of(name: str, make: Callable[[], bytes]) -> Callable[[Path, Path], list[Path]]:
    def write(folder: Path, outside: Path) -> list[Path]:
        path = folder / name
        path.write_bytes(make())
        return [path]

    return write


def _dataset_of(name: str, edit: Callable[[Dataset], None]) -> Callable[[Path, Path], list[Path]]:
    def make() -> bytes:
        ds = _template(name)
        edit(ds)
        return _dicom_bytes(ds)

    return _bytes_of(name, make)


def _truncated_header() -> bytes:
    return _dicom_bytes(_template("th"))[:300]  # inside the data set's first elements


def _truncated_pixels() -> bytes:
    data = _dicom_bytes(_template("tp"))
    return data[: len(data) - 40_000]


def _wrong_magic() -> bytes:
    data = bytearray(_dicom_bytes(_template("wm")))
    data[128:132] = b"DICX"
    return bytes(data)


def _pixel_element_offset(data: bytes) -> int:
    return data.rindex(b"\xe0\x7f\x10\x00")


def _length_lie() -> bytes:
    """PixelData that claims ~4 GiB while the file holds a few bytes."""
    data = _dicom_bytes(_template("ll"))
    start = _pixel_element_offset(data)
    return data[:start] + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 0xFFFFFFF0) + b"\0" * 64


def _deep_sequences(depth: int = 3000) -> bytes:
    """(0040,A730) ContentSequence items nested ``depth`` deep, before the pixel data."""
    opening = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = _dicom_bytes(_template("deep"))
    start = _pixel_element_offset(data)
    return data[:start] + opening * depth + closing * depth + data[start:]


def _huge_dimensions(ds: Dataset) -> None:
    ds.Rows = ds.Columns = 65535
    ds.PixelData = bytes(64)


def _huge_multiframe(ds: Dataset) -> None:
    ds.NumberOfFrames = 100_000
    ds.PixelData = bytes(256 * 256 * 2)


def _grey8(ds: Dataset) -> np.ndarray:
    return (ds.pixel_array >> (int(ds.BitsStored) - 8)).astype(np.uint8)


def _rgb(ds: Dataset) -> None:
    grey = _grey8(ds)
    ds.set_pixel_data(np.stack([grey, grey // 2, grey], -1), "RGB", 8, generate_instance_uid=False)


def _ybr(ds: Dataset) -> None:
    grey = _grey8(ds)
    planes = np.stack([grey, np.full_like(grey, 90), np.full_like(grey, 160)], -1)
    ds.set_pixel_data(planes, "YBR_FULL", 8, generate_instance_uid=False)


def _palette(ds: Dataset) -> None:
    ds.set_pixel_data(_grey8(ds), "PALETTE COLOR", 8, generate_instance_uid=False)
    lut = np.arange(256, dtype=np.uint16) * 257
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.tobytes())


def _float_nan(ds: Dataset) -> None:
    values = ds.pixel_array.astype(np.float32)
    values[::7, ::5] = np.nan
    for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()


def _signed_rescaled(ds: Dataset) -> None:
    """Signed 16-bit storage with an intercept that maps it back to 0-4095: a valid image."""
    signed = (ds.pixel_array.astype(np.int32) - 2048).astype(np.int16)
    ds.set_pixel_data(signed, "MONOCHROME2", 12, generate_instance_uid=False)
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 2048, 1, "US"


def _koa_output(ds: Dataset) -> None:
    ds.Manufacturer = "koa"
    ds.ImageType = ["DERIVED", "SECONDARY", "KOA"]


def _non_image(sop_class: str, modality: str) -> Callable[[], bytes]:
    def make() -> bytes:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Modality, ds.PatientID = modality, "KOA-REL-NONIMAGE"
        if sop_class == MediaStorageDirectoryStorage:
            ds.FileSetID = "KOA"
            ds.DirectoryRecordSequence = []
            del ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality
        return _dicom_bytes(ds)

    return make


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bomb() -> bytes:
    """A 50,000 x 50,000 px grey PNG header whose data is a few KiB of zeros."""
    side = 50_000
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def _deflate_bomb() -> bytes:
    """A valid deflated DICOM of ~2.3 MB whose data set inflates to 2 GiB of zeros.

    Deflate expands at most ~1032:1: no single-layer file of 10 KB inflates past ~10 MB.
    """
    return deflate_bomb(_template("deflate-bomb"), DEFLATE_BOMB_BYTES)


def _gzip() -> bytes:
    return gzip.compress(_dicom_bytes(_template("gz")))


def _huge_sparse(folder: Path, outside: Path) -> list[Path]:
    path = folder / "huge-sparse.dcm"
    with path.open("wb") as handle:
        handle.truncate(HUGE_SPARSE_BYTES)
    return [path]


def _symlink_outside(folder: Path, outside: Path) -> list[Path]:
    target = outside / "elsewhere.dcm"
    target.write_bytes(_dicom_bytes(_template("outside")))
    link = folder / "link-outside.dcm"
    link.symlink_to(target)
    return [link]


def _symlink_loop(folder: Path, outside: Path) -> list[Path]:
    link = folder / "loop.dcm"
    link.symlink_to(link)
    return [link]


def _fifo(folder: Path, outside: Path) -> list[Path]:
    path = folder / "pipe.dcm"
    os.mkfifo(path)
    return [path]


def _duplicate_uid(folder: Path, outside: Path) -> list[Path]:
    """A re-sent image: ``dup-a`` is kept (first by path), ``dup-b`` quarantined."""
    data = _dicom_bytes(_template("dup"))
    paths = [folder / "dup-a.dcm", folder / "dup-b.dcm"]
    for path in paths:
        path.write_bytes(data)
    return paths


HOSTILE_KINDS: tuple[Hostile, ...] = (
    Hostile("zero_byte", "empty_file", _bytes_of("zero.dcm", lambda: b"")),
    Hostile("truncated_header", "truncated", _bytes_of("cut-header.dcm", _truncated_header)),
    Hostile("truncated_pixels", "truncated", _bytes_of("cut-pixels.dcm", _truncated_pixels)),
    Hostile("wrong_magic", "not_dicom", _bytes_of("magic.dcm", _wrong_magic)),
    Hostile("length_lie", "truncated", _bytes_of("length-lie.dcm", _length_lie)),
    Hostile(
        "huge_dimensions",
        "dimensions_out_of_range",
        _dataset_of("huge-dims.dcm", _huge_dimensions),
    ),
    Hostile("huge_multiframe", "multi_frame", _dataset_of("frames.dcm", _huge_multiframe)),
    Hostile("deep_sequences", "corrupt", _bytes_of("deep.dcm", _deep_sequences)),
    Hostile(
        "structured_report",
        "no_pixel_data",
        _bytes_of("report.dcm", _non_image(BasicTextSRStorage, "SR")),
    ),
    Hostile(
        "rt_structure_set",
        "no_pixel_data",
        _bytes_of("rtstruct.dcm", _non_image(RTStructureSetStorage, "RTSTRUCT")),
    ),
    Hostile(
        "dicomdir",
        "unsupported_image",
        _bytes_of("DICOMDIR", _non_image(MediaStorageDirectoryStorage, "")),
    ),
    Hostile("rgb", "colour_image", _dataset_of("rgb.dcm", _rgb)),
    Hostile("ybr", "colour_image", _dataset_of("ybr.dcm", _ybr)),
    Hostile("palette", "colour_image", _dataset_of("palette.dcm", _palette)),
    Hostile("float_nan", "unsupported_image", _dataset_of("float.dcm", _float_nan)),
    Hostile("signed_rescaled", SCORED, _dataset_of("signed.dcm", _signed_rescaled)),
    Hostile("koa_output", "koa_output", _dataset_of("koa-output.dcm", _koa_output)),
    Hostile("png_bomb", "decompression_bomb", _bytes_of("bomb.png", _png_bomb)),
    Hostile("deflate_bomb", "decompression_bomb", _bytes_of("deflate-bomb.dcm", _deflate_bomb)),
    Hostile("gzip", "not_dicom", _bytes_of("knee.dcm.gz", _gzip)),
    Hostile("huge_sparse", "file_too_large", _huge_sparse),
    Hostile("name_spaces", SCORED, _valid("knee image  01 .dcm")),
    Hostile("name_unicode", SCORED, _valid("knié-膝-\u202eroot-🦴.dcm")),
    Hostile("name_shell", SCORED, _valid("$(touch PWNED); `id` | rm -rf x & y;'\"*?.dcm")),
    Hostile("symlink_outside", "unsafe_path", _symlink_outside),
    Hostile("symlink_loop", "unsafe_path", _symlink_loop),
    Hostile("fifo", "unsafe_path", _fifo),
    Hostile("duplicate_uid", "duplicate_sop_uid", _duplicate_uid),
)
"""Every kind; ``duplicate_uid`` writes a pair whose first file is scored."""
