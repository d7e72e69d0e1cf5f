"""Small valid DICOM radiographs for tests, in any transfer syntax pydicom or dcmtk encodes here."""

from __future__ import annotations

import copy
import io
import shutil
import struct
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

NATIVE_SYNTAXES = {
    "implicit": ImplicitVRLittleEndian,
    "explicit": ExplicitVRLittleEndian,
    "big_endian": ExplicitVRBigEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
}
PYDICOM_COMPRESSED = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless}
DCMTK_COMPRESSED = {
    "jpeg_lossless": ("dcmcjpeg", "+e1"),  # JPEG Lossless, first-order prediction (SV1)
    "jpeg_ls": ("dcmcjpls", "+el"),  # JPEG-LS lossless
}
TRANSFER_SYNTAXES = (*NATIVE_SYNTAXES, *PYDICOM_COMPRESSED, *DCMTK_COMPRESSED)
BOMB_BLOCK_BYTES = 2**20
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian


def dcmtk_missing(syntax: str) -> str | None:
    """Why ``syntax`` cannot be written here (its dcmtk tool is absent), else ``None``."""
    if syntax not in DCMTK_COMPRESSED:
        return None
    tool = DCMTK_COMPRESSED[syntax][0]
    if shutil.which(tool) is None:
        return f"dcmtk's {tool} is not installed (Debian package dcmtk; `make setup` installs it)"
    return None


def knee_like_pixels(
    rows: int = 320, columns: int = 288, bits_stored: int = 12, signed: bool = False, seed: int = 0
) -> npt.NDArray[np.integer]:
    """A smooth, knee-ish test image (bright bones, dark gap, soft tissue, mild noise).

    Spans most of the ``bits_stored`` range, so the modality LUT and MONOCHROME1 inversion
    are exercised on the full value range, and compresses well in every codec.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    y, x = y / rows - 0.5, x / columns - 0.5
    tissue = 0.35 * np.exp(-(x**2) / 0.08)
    femur = 0.55 * (np.abs(x) < 0.18) * (y < -0.04)
    tibia = 0.5 * (np.abs(x) < 0.2) * (y > 0.04)
    image = tissue + femur + tibia + 0.1 * (x + 0.5) + rng.normal(0, 0.01, size=(rows, columns))
    image = (image - image.min()) / (image.max() - image.min())
    top = 2**bits_stored - 1
    values = np.rint(image * top).astype(np.int64)
    if signed:
        values -= 2 ** (bits_stored - 1)
    if bits_stored <= 8:
        return values.astype(np.int8 if signed else np.uint8)
    return values.astype(np.int16 if signed else np.uint16)


def make_dataset(
    pixels: npt.NDArray[np.integer] | None = None,
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    laterality: str | None = "R",
    signed: bool = False,
    rescale: tuple[float, float] | None = None,
    spacing_mm: Sequence[float] | None = (0.2, 0.2),
    imager_spacing_only: bool = False,
    laterality_keyword: str = "ImageLaterality",
    seed: int = 0,
) -> Dataset:
    """A DX "For Presentation" knee dataset (explicit VR little endian until written).

    Args:
        pixels: stored values; ``knee_like_pixels(bits_stored=..., signed=...)`` when omitted.
        photometric: ``MONOCHROME1`` stores the image inverted (``2**bits - 1 - pixels``).
        rescale: ``(slope, intercept)`` for (0028,1053)/(0028,1052), or none.
        spacing_mm: (row, column) spacing; written as ImagerPixelSpacing only when
            ``imager_spacing_only``, else as both PixelSpacing and ImagerPixelSpacing.
        laterality_keyword: ``ImageLaterality`` or ``Laterality`` (series-level).
    """
    if pixels is None:
        pixels = knee_like_pixels(bits_stored=bits_stored, signed=signed, seed=seed)
    if photometric == "MONOCHROME1":
        low = -(2 ** (bits_stored - 1)) if signed else 0
        pixels = (2 * low + 2**bits_stored - 1 - pixels.astype(np.int64)).astype(pixels.dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID, ds.StudyDate, ds.Modality = "KOA-TEST-1", "20240131", "DX"
    ds.BodyPartExamined, ds.ViewPosition, ds.Manufacturer = "KNEE", "PA", "koa-tests"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if laterality is not None:
        setattr(ds, laterality_keyword, laterality)
    if spacing_mm is not None:
        ds.ImagerPixelSpacing = list(spacing_mm)
        if not imager_spacing_only:
            ds.PixelSpacing = list(spacing_mm)
    ds.set_pixel_data(pixels, photometric, bits_stored)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    return ds


def write_dicom(path: Path, ds: Dataset | None = None, *, syntax: str = "explicit") -> Path:
    """Write ``ds`` (``make_dataset()`` when omitted) to ``path`` in ``syntax``.

    ``syntax`` is a key of ``TRANSFER_SYNTAXES``; dcmtk syntaxes need ``dcmtk_missing``
    to be ``None`` (call it first and skip the test otherwise).
    """
    ds = make_dataset() if ds is None else ds
    path.parent.mkdir(parents=True, exist_ok=True)
    if syntax == "big_endian":
        # pydicom writes OW values as they are: swap them to big endian first.
        stored = ds.pixel_array
        ds.PixelData = stored.astype(stored.dtype.newbyteorder(">")).tobytes()
    if syntax in PYDICOM_COMPRESSED:
        ds.compress(PYDICOM_COMPRESSED[syntax], generate_instance_uid=False)
    elif syntax in NATIVE_SYNTAXES:
        ds.file_meta.TransferSyntaxUID = NATIVE_SYNTAXES[syntax]
    if syntax in DCMTK_COMPRESSED:
        tool, option = DCMTK_COMPRESSED[syntax]
        source = path.with_name(path.name + ".native.dcm")
        ds.save_as(source, enforce_file_format=True)
        subprocess.run([tool, option, str(source), str(path)], check=True, capture_output=True)
        source.unlink()
        return path
    ds.save_as(path, enforce_file_format=True)
    return path


def pydicom_test_files() -> list[Path]:
    """Every file shipped in pydicom's ``data/test_files`` (recursively; directories skipped)."""
    return sorted(path for path in PYDICOM_TEST_FILES.rglob("*") if path.is_file())


def _part10(ds: Dataset, syntax: str) -> tuple[bytes, bytes]:
    """``ds`` written in ``syntax``, split into (preamble and meta group, data set)."""
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = NATIVE_SYNTAXES[syntax]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    # (0002,0000) FileMetaInformationGroupLength: the meta bytes after its own 12.
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    return data[:meta_end], data[meta_end:]


def deflate_bomb(ds: Dataset, inflated_bytes: int, *, in_pixel_data: bool = False) -> bytes:
    """``ds`` as a valid deflated Part 10 file whose data set inflates to over ``inflated_bytes``.

    The bulk is zeros in one OB value: (7FDF,1000) of a private block just before
    (7FE0,0010) PixelData (a header-only read meets it), or PixelData itself. After a full
    flush each MiB of zeros deflates (level 9) to the same ~1 KB, so the stream repeats
    those bytes: single-layer deflate, written in milliseconds. Deflate expands at most
    ~1032:1, so 2 GiB take ~2.1 MB; a 10 KB file cannot inflate past ~10 MB.
    """
    meta, _ = _part10(ds, "deflated")
    _, dataset = _part10(ds, "explicit")
    pixels_at = dataset.rindex(_PIXEL_DATA_TAG)
    blocks = -(-inflated_bytes // BOMB_BLOCK_BYTES)
    if in_pixel_data:
        bulk = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, blocks * BOMB_BLOCK_BYTES)
        after = b""
    else:
        creator = struct.pack("<HH2sH", 0x7FDF, 0x0010, b"LO", 8) + b"KOA BOMB"
        bulk = creator + struct.pack("<HH2sHI", 0x7FDF, 0x1000, b"OB", 0, blocks * BOMB_BLOCK_BYTES)
        after = dataset[pixels_at:]
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflater.compress(dataset[:pixels_at] + bulk) + deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(bytes(BOMB_BLOCK_BYTES)) + deflater.flush(zlib.Z_FULL_FLUSH)
    tail = deflater.compress(after) + deflater.flush()
    return meta + head + block * blocks + tail
