"""DICOM radiographs on pydicom 3: header-only metadata and bounded, validated pixel decoding."""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, Jpeg2KImagePlugin
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut
from pydicom.pixels.utils import get_expected_length, get_j2k_parameters, pixel_array
from pydicom.uid import (
    JPEG2000,
    RE_VALID_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MediaStorageDirectoryStorage,
)

from koa_core.config import Settings, get_settings
from koa_core.errors import (
    BitDepthError,
    ColourImageError,
    CorruptImageError,
    DimensionsOutOfRangeError,
    EmptyFileError,
    FileTooLargeError,
    ImageReadError,
    MultiFrameError,
    NoPixelDataError,
    NotDicomError,
    TruncatedFileError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from koa_core.imaging.transforms import FIELD_MM
from koa_core.io.codestream import SIZED_SYNTAXES, codestream_size
from koa_core.io.inflation import check_inflated_size, inflate_chunks
from koa_core.io.record import ImageMetadata, Radiograph

PREAMBLE_BYTES = 128
MAGIC = b"DICM"
GZIP_MAGIC = b"\x1f\x8b"
GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR_PREFIXES = ("RGB", "YBR", "PALETTE", "HSV", "ARGB", "CMYK")
MIN_BITS_STORED, MAX_BITS_STORED = 8, 16
NATIVE_SYNTAXES = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)
REDUCIBLE_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000})
# A file with no preamble must start with a (0002,xxxx) meta or (0008,xxxx) identifying
# element, in either byte order; anything else is not worth handing to ``force=True``.
_BARE_FIRST_GROUPS = frozenset({b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"})
_COD_MARKER, _SOT_MARKER = 0xFF52, 0xFF90
UNDEFINED_LENGTH = 0xFFFFFFFF
# The one meta element an inflated data set is handed to pydicom behind: (0002,0010)
# TransferSyntaxUID, Explicit VR Little Endian (a UI value pads to even), so it never inflates.
_EXPLICIT_LE_UID = ExplicitVRLittleEndian.encode("ascii") + b"\0"
_TS_HEADER = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(_EXPLICIT_LE_UID))
_INFLATED_META = _TS_HEADER + _EXPLICIT_LE_UID

FloatImage = npt.NDArray[np.float32]


def looks_like_dicom(head: bytes) -> bool:
    """Whether the first bytes of a file are a Part 10 preamble or a bare DICOM data set."""
    if head[PREAMBLE_BYTES : PREAMBLE_BYTES + 4] == MAGIC:
        return True
    return len(head) >= 8 and head[:2] in _BARE_FIRST_GROUPS


def not_dicom_detail(head: bytes) -> str:
    """Why a file whose first bytes are ``head`` is not DICOM, naming gzip when it is gzip."""
    if head.startswith(GZIP_MAGIC):
        return "a gzip-compressed file: decompress it before scoring"
    return "no DICM preamble and no DICOM element at the start"


def check_file_size(path: Path, settings: Settings) -> int:
    """The size of ``path`` in bytes, refusing empty files and files over ``max_file_bytes``."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ImageReadError(path, f"cannot stat: {error}") from error
    if size == 0:
        raise EmptyFileError(path, "the file has zero bytes")
    if size > settings.max_file_bytes:
        raise FileTooLargeError(
            path, f"{size} bytes exceeds max_file_bytes={settings.max_file_bytes}"
        )
    return size


@contextmanager
def named_errors(path: Path, action: str) -> Iterator[None]:
    """Turn what pydicom, numpy and the codecs raise on a bad file into a named error."""
    try:
        yield
    except InvalidDicomError as error:
        raise NotDicomError(path, f"{action}: {error}") from error
    except (EOFError, struct.error) as error:
        raise TruncatedFileError(path, f"{action}: the file ends early ({error})") from error
    except RecursionError as error:
        raise CorruptImageError(path, f"{action}: sequences nested too deeply") from error
    except (
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        NotImplementedError,
        RuntimeError,
        zlib.error,
        BytesLengthException,
    ) as error:
        raise CorruptImageError(path, f"{action}: {type(error).__name__}: {error}") from error
    except OSError as error:
        # pydicom reports malformed content ("No tag to read at file position ...") as an
        # OSError without an errno; only a real I/O failure carries one.
        if error.errno is None:
            raise CorruptImageError(path, f"{action}: {error}") from error
        raise ImageReadError(path, f"{action}: {error}") from error
    except BaseException as error:
        # Rust codecs (pylibjpeg-rle) panic on some corrupt frames; pyo3 raises that as
        # ``pyo3_runtime.PanicException``, a BaseException no module exports by name.
        if type(error).__name__ != "PanicException":
            raise
        raise CorruptImageError(path, f"{action}: the codec panicked: {error}") from error


class _BoundedReader(io.BufferedReader):
    """A binary file whose ``read(n)`` never asks for more than is left in the file.

    A header may claim any element length up to 4 GiB; pydicom reads a value in one call,
    and Python allocates the whole buffer before it finds the file shorter.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1, /) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(self._size - self.tell(), 0))
        return super().read(size)


def _read_dataset(path: Path, *, pixels: bool, settings: Settings) -> Dataset:
    """Parse ``path`` (headers only unless ``pixels``); a bare data set must name its SOP class."""
    check_file_size(path, settings)
    with path.open("rb") as handle:
        head = handle.read(PREAMBLE_BYTES + 4)
    if not looks_like_dicom(head):
        raise NotDicomError(path, not_dicom_detail(head))
    bare = head[PREAMBLE_BYTES:] != MAGIC
    with named_errors(path, "reading the DICOM header"):
        with _BoundedReader(path) as handle:
            ds = _parse(path, handle, pixels=pixels, bare=bare, limit=settings.max_file_bytes)
        if bare and not RE_VALID_UID.match(str(ds.get("SOPClassUID") or "")):
            raise NotDicomError(path, "no DICM preamble and no valid (0008,0016) SOPClassUID")
        _check_complete(path, ds)
    return ds


def _parse(path: Path, handle: _BoundedReader, *, pixels: bool, bare: bool, limit: int) -> Dataset:
    """``dcmread`` the file in ``handle``; a deflated data set is inflated here, bounded.

    pydicom inflates (0002,0010) Deflated Explicit VR Little Endian in one unbounded
    ``zlib.decompress``, header-only reads included; it is only handed inflated bytes.
    """
    preamble = read_preamble(handle, force=bare)
    meta = _read_file_meta_info(handle)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        handle.seek(0)
        return dcmread(handle, stop_before_pixels=not pixels, force=bare)
    ds = dcmread(_inflated(path, handle.read(), preamble, limit), stop_before_pixels=not pixels)
    ds.preamble, ds.file_meta = preamble, meta  # as read: (0002,0010) says Deflated again
    return ds


def _inflated(path: Path, deflated: bytes, preamble: bytes | None, limit: int) -> DicomBytesIO:
    """A Part 10 stream of the data set ``deflated`` holds (PS3.5 A.5), explicit VR LE.

    Its inflated size is counted first, keeping nothing, so a bomb is refused in constant
    memory; only a data set within ``limit`` (``max_file_bytes``) is inflated into memory.

    Raises:
        DecompressionBombError: the data set inflates past ``limit``.
    """
    check_inflated_size(path, deflated, limit)
    stream = DicomBytesIO()
    stream.name = str(path)
    stream.write((preamble or bytes(PREAMBLE_BYTES)) + MAGIC + _INFLATED_META)
    for chunk in inflate_chunks(deflated):
        stream.write(chunk)
    stream.seek(0)
    return stream


def _check_complete(path: Path, ds: Dataset) -> None:
    """Refuse a file cut inside its last element: pydicom keeps the short value silently."""
    if not ds:
        raise TruncatedFileError(path, "the file ends before its first data set element")
    for group in (ds.file_meta if hasattr(ds, "file_meta") else Dataset(), ds):
        if not group:
            continue
        last = group.get_item(max(group.keys()))
        if isinstance(last, RawDataElement) and last.length != UNDEFINED_LENGTH:
            received = len(last.value) if last.value is not None else last.length
            if received < last.length:
                raise TruncatedFileError(
                    path, f"{last.tag} holds {received} of its {last.length} bytes"
                )


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _laterality(ds: Dataset) -> str | None:
    """(0020,0062) ImageLaterality, else (0020,0060) Laterality; only ``L``/``R`` are kept."""
    value = _text(ds, "ImageLaterality") or _text(ds, "Laterality")
    return value if value in ("L", "R") else None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(0028,0030) PixelSpacing, else (0018,1164) ImagerPixelSpacing, in mm (row, column)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            spacing = (float(value[0]), float(value[1]))
            if all(math.isfinite(v) and v > 0 for v in spacing):
                return spacing
    return None


def transfer_syntax(ds: Dataset) -> UID | None:
    """(0002,0010) TransferSyntaxUID, or the encoding a bare data set was read in."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax:
        return UID(str(syntax))
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _is_dicomdir(ds: Dataset) -> bool:
    meta_class = ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else None
    return meta_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds


def _metadata(path: Path, ds: Dataset) -> ImageMetadata:
    """The record of an image data set that ``_check_image`` has accepted."""
    image_type = ds.get("ImageType")
    if image_type is None:
        image_types: tuple[str, ...] = ()
    elif isinstance(image_type, str):
        image_types = (image_type,)
    else:
        image_types = tuple(str(value) for value in image_type)
    study_date = _text(ds, "StudyDate")
    syntax = transfer_syntax(ds)
    return ImageMetadata(
        path=str(path),
        file_format="dicom",
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        bits_stored=int(ds.BitsStored),
        photometric_interpretation=str(ds.PhotometricInterpretation),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_date=study_date if study_date and len(study_date) == 8 else None,
        modality=_text(ds, "Modality"),
        body_part_examined=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"),
        study_description=_text(ds, "StudyDescription"),
        series_description=_text(ds, "SeriesDescription"),
        protocol_name=_text(ds, "ProtocolName"),
        laterality=_laterality(ds),
        pixel_spacing_mm=_pixel_spacing(ds),
        image_type=image_types,
        manufacturer=_text(ds, "Manufacturer"),
        transfer_syntax_uid=str(syntax) if syntax else None,
        number_of_frames=int(ds.get("NumberOfFrames") or 1),
        samples_per_pixel=int(ds.get("SamplesPerPixel") or 1),
    )


def _check_kind(path: Path, ds: Dataset) -> None:
    """Refuse data sets that are not one greyscale frame: directories, SRs, colour, cines."""
    if _is_dicomdir(ds):
        raise UnsupportedImageError(path, "a DICOMDIR (media directory), not an image")
    if "Rows" not in ds or "Columns" not in ds:
        sop_class = _text(ds, "SOPClassUID")
        kind = UID(sop_class).name if sop_class else "a data set without SOPClassUID"
        raise NoPixelDataError(path, f"{kind} has no image (no Rows/Columns)")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise MultiFrameError(path, f"(0028,0008) NumberOfFrames is {frames}; one frame expected")
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = _text(ds, "PhotometricInterpretation")
    if samples != 1 or (photometric or "").startswith(COLOUR_PREFIXES):
        raise ColourImageError(
            path, f"SamplesPerPixel={samples}, PhotometricInterpretation={photometric}"
        )
    if photometric not in GREYSCALE:
        raise UnsupportedImageError(path, f"(0028,0004) PhotometricInterpretation={photometric}")


def _check_geometry(path: Path, ds: Dataset, settings: Settings) -> None:
    """Refuse bit depths and sizes outside the configured limits before anything is decoded."""
    if "BitsStored" not in ds:
        raise UnsupportedImageError(path, "no (0028,0101) BitsStored: float or absent pixels")
    bits = int(ds.BitsStored)
    if not MIN_BITS_STORED <= bits <= MAX_BITS_STORED:
        raise BitDepthError(
            path, f"BitsStored={bits}; {MIN_BITS_STORED}-{MAX_BITS_STORED} expected"
        )
    rows, columns = int(ds.Rows), int(ds.Columns)
    low, high = settings.min_image_px, settings.max_image_px
    if not (low <= rows <= high and low <= columns <= high):
        raise DimensionsOutOfRangeError(path, f"{rows}x{columns} px outside {low}-{high} px")
    decoded_bytes = rows * columns * max(int(ds.get("BitsAllocated") or 16), 8) // 8
    if decoded_bytes > settings.max_file_bytes:
        raise DimensionsOutOfRangeError(
            path, f"{decoded_bytes} decoded bytes exceed max_file_bytes={settings.max_file_bytes}"
        )


def _checked_header(path: Path, ds: Dataset, settings: Settings) -> ImageMetadata:
    with named_errors(path, "reading the DICOM header"):
        _check_kind(path, ds)
        _check_geometry(path, ds, settings)
        return _metadata(path, ds)


def read_dicom_metadata(path: str | Path, *, settings: Settings | None = None) -> ImageMetadata:
    """Header-only read (``stop_before_pixels``) of one greyscale single-frame DICOM image.

    Args:
        path: a DICOM Part 10 file, or a bare data set that names its SOP class.
        settings: limits to apply; ``get_settings()`` when omitted.

    Raises:
        ImageReadError: a subclass naming why the file cannot be used.
    """
    settings = settings or get_settings()
    path = Path(path)
    ds = _read_dataset(path, pixels=False, settings=settings)
    return _checked_header(path, ds, settings)


def _check_pixel_data(path: Path, ds: Dataset, syntax: UID | None) -> None:
    """Refuse float, absent, truncated, undecodable or mis-sized (7FE0,0010) PixelData."""
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise UnsupportedImageError(path, "float pixel data (7FE0,0008/0009) is not a radiograph")
    if "PixelData" not in ds:
        raise NoPixelDataError(path, "no (7FE0,0010) PixelData")
    if syntax is None:
        raise UnsupportedTransferSyntaxError(path, "no (0002,0010) TransferSyntaxUID")
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise UnsupportedTransferSyntaxError(path, f"no decoder for {syntax} ({syntax.name})")
    if syntax in NATIVE_SYNTAXES:
        expected, actual = get_expected_length(ds), len(ds.PixelData)
        if actual < expected:
            raise TruncatedFileError(path, f"PixelData has {actual} of {expected} bytes")
    elif syntax in SIZED_SYNTAXES:
        _check_codestream(path, ds, syntax)


def _check_codestream(path: Path, ds: Dataset, syntax: UID) -> None:
    """Refuse a JPEG or JPEG 2000 frame not sized (0028,0010) Rows x (0028,0011) Columns.

    A codec allocates what its codestream declares, and only the header's size was held to
    the limits (``_check_geometry``): once both agree, the decode is bounded by them. A
    codestream that disagrees is not the image the header describes, whatever its size.
    """
    frame = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
    header = (int(ds.Rows), int(ds.Columns))
    size = codestream_size(frame, syntax)
    if size is None:
        raise CorruptImageError(path, f"no {syntax.name} frame header gives the frame's size")
    if size != header:
        raise CorruptImageError(
            path, f"the codestream is {size[0]}x{size[1]} px, the header {header[0]}x{header[1]}"
        )


def resolution_level(meta: ImageMetadata, target_size: int | None, max_level: int) -> int:
    """The lowest JPEG 2000 resolution level whose image still covers ``target_size``.

    The side that matters is the square ``koa_core.imaging.transforms.centre_crop`` will take: the
    ``FIELD_MM`` field when the pixel spacing is known, else the shorter image side.
    """
    if not target_size or target_size <= 0:
        return 0
    side = min(meta.rows, meta.columns)
    if meta.pixel_spacing_mm is not None:
        side = min(side, round(FIELD_MM / meta.pixel_spacing_mm[0]))
    level = 0
    while level < max_level and math.ceil(side / 2 ** (level + 1)) >= target_size:
        level += 1
    return level


def _decomposition_levels(codestream: bytes) -> int:
    """The number of wavelet levels in the main header's (FF52) COD marker; 0 if none."""
    offset = 2  # after (FF4F) SOC
    while offset + 10 <= len(codestream):
        marker, length = struct.unpack_from(">HH", codestream, offset)
        if marker == _COD_MARKER:
            # Lcod, Scod and the 4-byte SGcod precede SPcod's decomposition-level count.
            return codestream[offset + 9]
        if marker == _SOT_MARKER or marker < 0xFF00:
            return 0
        offset += 2 + length
    return 0


def _decode_reduced(path: Path, codestream: bytes, meta: ImageMetadata, level: int) -> FloatImage:
    """Decode a J2K codestream ``level`` resolution levels down with Pillow's openjpeg ``reduce``.

    pylibjpeg-openjpeg has no reduce option; Pillow's does. Pillow widens samples to 8 or
    16 bits and offsets signed ones, so the stored value scale is restored here.
    """
    parameters = get_j2k_parameters(codestream)
    with Image.open(io.BytesIO(codestream)) as image:
        if (
            not isinstance(image, Jpeg2KImagePlugin.Jpeg2KImageFile)
            or image.size != (meta.columns, meta.rows)
            or image.mode not in ("L", "I;16")
        ):
            raise CorruptImageError(
                path, f"codestream is {image.size} {image.mode}, header {meta.columns}x{meta.rows}"
            )
        image.reduce = level
        image.load()
        values = np.asarray(image, dtype=np.float32)
    shift = (8 if image.mode == "L" else 16) - int(parameters["precision"])
    offset = 2 ** (int(parameters["precision"]) - 1) if parameters["is_signed"] else 0
    return values / np.float32(2**shift) - np.float32(offset)


def _stored_values(
    path: Path, ds: Dataset, meta: ImageMetadata, target_size: int | None
) -> tuple[npt.NDArray[np.generic], int]:
    """The stored pixel values and the factor they were reduced by at decode time."""
    if target_size and transfer_syntax(ds) in REDUCIBLE_SYNTAXES:
        codestream = next(generate_frames(ds.PixelData, number_of_frames=1), b"")
        level = resolution_level(meta, target_size, _decomposition_levels(codestream))
        if level > 0:
            try:
                return _decode_reduced(path, codestream, meta, level), 2**level
            except (OSError, Image.DecompressionBombError):
                # Pillow refuses a level some tile does not have, or more pixels than its
                # MAX_IMAGE_PIXELS where koa's limits allow them: pydicom decodes it whole.
                pass
    return pixel_array(ds), 1


def _bone_bright(stored: npt.NDArray[np.generic], ds: Dataset) -> FloatImage:
    """Apply the modality LUT (0028,1052/1053 or 0028,3000) and invert MONOCHROME1.

    MONOCHROME1 is mirrored within the range the stored bits can hold (not the image's own
    range), so a MONOCHROME1 and a MONOCHROME2 copy of an image differ by a constant only.
    """
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        bits = int(ds.BitsStored)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        lowest = -(2 ** (bits - 1)) if signed else 0
        limits = np.asarray(apply_modality_lut(np.array([lowest, lowest + 2**bits - 1]), ds))
        values = np.float32(limits.min() + limits.max()) - values
    return np.ascontiguousarray(values, dtype=np.float32)


def read_dicom(
    path: str | Path, target_size: int | None = None, *, settings: Settings | None = None
) -> Radiograph:
    """Decode one greyscale DICOM radiograph: modality LUT applied, bone bright, float32.

    Every transfer syntax pydicom 3 decodes with the installed pylibjpeg plugins is read.
    JPEG 2000 is decoded at the lowest resolution level still covering ``target_size``
    (see ``resolution_level``); ``Radiograph.decode_scale`` is then ``2**level``.

    Args:
        path: a DICOM Part 10 file, or a bare data set that names its SOP class.
        target_size: the model input side, or ``None`` for a full-resolution decode.
        settings: limits to apply; ``get_settings()`` when omitted.

    Raises:
        ImageReadError: a subclass naming why the file cannot be used.
    """
    settings = settings or get_settings()
    path = Path(path)
    ds = _read_dataset(path, pixels=True, settings=settings)
    meta = _checked_header(path, ds, settings)
    with named_errors(path, "decoding the pixel data"):
        _check_pixel_data(path, ds, transfer_syntax(ds))
        stored, scale = _stored_values(path, ds, meta, target_size)
        pixels = _bone_bright(stored, ds)
    if pixels.ndim != 2:
        raise CorruptImageError(path, f"decoded to shape {pixels.shape}, one 2-D frame expected")
    return Radiograph(pixels=pixels, meta=meta, decode_scale=scale)
