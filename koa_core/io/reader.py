"""One entry point for every radiograph: the format is sniffed from the content, not the name."""

from __future__ import annotations

from pathlib import Path

from koa_core.config import Settings, get_settings
from koa_core.errors import ImageReadError, NotDicomError
from koa_core.io.dicom import (
    MAGIC,
    PREAMBLE_BYTES,
    check_file_size,
    looks_like_dicom,
    not_dicom_detail,
    read_dicom,
    read_dicom_metadata,
)
from koa_core.io.raster import read_raster, read_raster_metadata
from koa_core.io.record import ImageMetadata, Radiograph

RASTER_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG SOI
    b"II*\x00",  # little-endian TIFF
    b"MM\x00*",  # big-endian TIFF
)


def sniff_format(path: str | Path, *, settings: Settings | None = None) -> str:
    """``"dicom"`` or ``"raster"``, from the first bytes of the file.

    Raises:
        EmptyFileError, FileTooLargeError: from the file size alone.
        NotDicomError: anything else, with a detail saying what it looks like (e.g. gzip).
    """
    path = Path(path)
    check_file_size(path, settings or get_settings())
    try:
        with path.open("rb") as handle:
            head = handle.read(PREAMBLE_BYTES + 4)
    except OSError as error:
        raise ImageReadError(path, f"cannot open: {error}") from error
    # DICM first: a Part 10 preamble may itself hold a TIFF header (dual-format files).
    if head[PREAMBLE_BYTES:] == MAGIC:
        return "dicom"
    if head.startswith(RASTER_MAGIC):
        return "raster"
    if looks_like_dicom(head):
        return "dicom"
    raise NotDicomError(path, f"not DICOM, PNG, JPEG or TIFF: {not_dicom_detail(head)}")


def read_metadata(path: str | Path, *, settings: Settings | None = None) -> ImageMetadata:
    """Header-only metadata of a DICOM, PNG, JPEG or TIFF radiograph (pixels not decoded).

    Raises:
        ImageReadError: a subclass naming why the file cannot be used.
    """
    if sniff_format(path, settings=settings) == "dicom":
        return read_dicom_metadata(path, settings=settings)
    return read_raster_metadata(path, settings=settings)


def read_radiograph(
    path: str | Path, target_size: int | None = None, *, settings: Settings | None = None
) -> Radiograph:
    """Decode a radiograph to float32 pixels, modality LUT applied and bone bright.

    Args:
        path: a DICOM, PNG, JPEG or TIFF file.
        target_size: the model input side; JPEG 2000 DICOMs are then decoded at the lowest
            resolution level still covering it (``Radiograph.decode_scale`` says by how much).
        settings: limits to apply; ``get_settings()`` when omitted.

    Raises:
        ImageReadError: a subclass naming why the file cannot be used.
    """
    if sniff_format(path, settings=settings) == "dicom":
        return read_dicom(path, target_size, settings=settings)
    return read_raster(path, target_size, settings=settings)
