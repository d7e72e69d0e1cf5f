"""PNG, JPEG and TIFF radiographs through Pillow: greyscale only, size checked before decoding."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from koa_core.config import Settings, get_settings
from koa_core.errors import (
    BitDepthError,
    ColourImageError,
    CorruptImageError,
    DecompressionBombError,
    DimensionsOutOfRangeError,
    ImageReadError,
    NotDicomError,
    TruncatedFileError,
    UnsupportedImageError,
)
from koa_core.io.dicom import check_file_size
from koa_core.io.inflation import oversized_error
from koa_core.io.record import ImageMetadata, Radiograph

FILE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff"}
GREY_MODES = {"L": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 16}
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "LA", "P", "PA"})
GREY_TOLERANCE = 2
"""Largest channel spread (8-bit levels) of a grey image stored as RGB: JPEG's colour
conversion leaves +-1 on exactly grey pixels."""
MAX_16_BIT = 65535
DECODED_BYTES_PER_PIXEL = 4
"""What one pixel may cost decoded: float32 output, and Pillow's widest mode read (RGBA, I)."""
# Pillow's bounds on what one PNG text or ICC profile chunk (zTXt, iTXt, iCCP) and all
# text together may inflate to; its ValueError names the one that was exceeded.
_PILLOW_TEXT_BOUNDS = ("MAX_TEXT_CHUNK", "MAX_TEXT_MEMORY")
_LEFT = frozenset({"l", "left", "lt"})
_RIGHT = frozenset({"r", "right", "rt"})

FloatImage = npt.NDArray[np.float32]


def laterality_from_name(path: Path) -> str | None:
    """``"L"``/``"R"`` when the file name says so in a token of its own, else ``None``.

    ``knee_L.png``, ``0001-left.jpg`` and ``R_knee.tif`` name a side; ``LR.png`` or a
    name with both sides does not.
    """
    tokens = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
    left, right = bool(tokens & _LEFT), bool(tokens & _RIGHT)
    if left == right:
        return None
    return "L" if left else "R"


def _info_laterality(image: Image.Image) -> str | None:
    value = str(image.info.get("laterality", "")).strip().upper()
    return value if value in ("L", "R") else None


def _info_spacing(image: Image.Image) -> tuple[float, float] | None:
    """A ``pixel_spacing_mm`` text chunk (written by koa's phantom PNGs), else ``None``."""
    try:
        spacing = float(image.info.get("pixel_spacing_mm", ""))
    except ValueError:
        return None
    return (spacing, spacing) if np.isfinite(spacing) and spacing > 0 else None


def _check_size(path: Path, image: Image.Image, file_bytes: int, settings: Settings) -> None:
    """Refuse sizes over the limits from the header alone, before any pixel is decoded.

    A decode over ``max_file_bytes`` is a decompression bomb when the file is a hundredth
    of it or less (``koa_core.io.inflation.oversized_error``), else a large image. The
    minimum is not applied: public KL-graded datasets ship 224 px crops; the nightly
    manifest checks apply ``min_image_px`` to raster rows.
    """
    columns, rows = image.size
    decoded = rows * columns * DECODED_BYTES_PER_PIXEL
    if decoded > settings.max_file_bytes:
        error = oversized_error(decoded, file_bytes, DimensionsOutOfRangeError)
        raise error(
            path,
            f"{rows}x{columns} px decode to {decoded} bytes from {file_bytes}, over "
            f"max_file_bytes={settings.max_file_bytes}",
        )
    high = settings.max_image_px
    if not (0 < rows <= high and 0 < columns <= high):
        raise DimensionsOutOfRangeError(path, f"{rows}x{columns} px outside 1-{high} px")


def _bits(path: Path, image: Image.Image) -> int:
    """8 or 16: the bit depth of a greyscale (or grey-in-colour) image."""
    if image.mode in GREY_MODES:
        return GREY_MODES[image.mode]
    if image.mode in COLOUR_MODES:
        return 8
    if image.mode == "F":
        raise UnsupportedImageError(path, "floating-point pixels (mode F)")
    if image.mode == "1":
        raise BitDepthError(path, "a 1-bit image")
    raise ColourImageError(path, f"colour mode {image.mode}")


def _metadata(path: Path, image: Image.Image, file_format: str) -> ImageMetadata:
    columns, rows = image.size
    return ImageMetadata(
        path=str(path),
        file_format=file_format,
        rows=rows,
        columns=columns,
        bits_stored=_bits(path, image),
        photometric_interpretation="MONOCHROME2",
        laterality=_info_laterality(image) or laterality_from_name(path),
        pixel_spacing_mm=_info_spacing(image),
        samples_per_pixel=len(image.getbands()),
    )


def _is_text_bomb(error: Exception) -> bool:
    """Whether Pillow refused a PNG chunk for inflating past one of its text bounds."""
    return isinstance(error, ValueError) and any(b in str(error) for b in _PILLOW_TEXT_BOUNDS)


def _open(path: Path, settings: Settings) -> Image.Image:
    """Open ``path`` lazily (the header only) and check its size before anything decodes."""
    file_bytes = check_file_size(path, settings)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        # Pillow refuses past 2 * MAX_IMAGE_PIXELS: the least this header declares.
        least = (2 * (Image.MAX_IMAGE_PIXELS or 0) + 1) * DECODED_BYTES_PER_PIXEL
        error_class = oversized_error(least, file_bytes, DimensionsOutOfRangeError)
        raise error_class(path, str(error)) from error
    except UnidentifiedImageError as error:
        raise NotDicomError(path, f"neither DICOM nor an image Pillow reads: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        if _is_text_bomb(error):
            raise DecompressionBombError(path, f"a PNG chunk inflates too far: {error}") from error
        raise CorruptImageError(path, f"unreadable image header: {error}") from error
    if image.format not in FILE_FORMATS:
        image.close()
        raise UnsupportedImageError(path, f"{image.format} images are not read")
    try:
        _check_size(path, image, file_bytes, settings)
    except ImageReadError:
        image.close()
        raise
    return image


def read_raster_metadata(path: str | Path, *, settings: Settings | None = None) -> ImageMetadata:
    """The record of a PNG/JPEG/TIFF radiograph, from its header (pixels are not decoded).

    Colour is only detected when the pixels are read: an RGB file may hold a grey image.

    Raises:
        ImageReadError: a subclass naming why the file cannot be used.
    """
    path = Path(path)
    image = _open(path, settings or get_settings())
    with image:
        return _metadata(path, image, FILE_FORMATS[str(image.format)])


def _grey_values(path: Path, image: Image.Image) -> FloatImage:
    """The pixels as one float32 grey plane; colour images are refused, grey ones kept."""
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" else "RGB")
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "I" and (values.min() < 0 or values.max() > MAX_16_BIT):
        raise BitDepthError(path, "32-bit integer pixels outside 0-65535")
    if values.ndim == 2:
        return values
    colour = values[..., : 3 if values.shape[-1] >= 3 else 1]
    spread = float((colour.max(axis=-1) - colour.min(axis=-1)).max())
    if spread > GREY_TOLERANCE:
        raise ColourImageError(path, f"{image.mode} pixels differ between channels by {spread:g}")
    return np.ascontiguousarray(colour.mean(axis=-1), dtype=np.float32)


def _undecodable(path: Path, error: OSError | ValueError) -> ImageReadError:
    """The named error for pixel data Pillow could not decode (chunks after IDAT included)."""
    detail = str(error)
    if _is_text_bomb(error):
        return DecompressionBombError(path, f"a PNG chunk inflates too far: {detail}")
    cls = TruncatedFileError if "truncated" in detail else CorruptImageError
    return cls(path, f"undecodable image data: {detail}")


def read_raster(
    path: str | Path, target_size: int | None = None, *, settings: Settings | None = None
) -> Radiograph:
    """Decode a PNG/JPEG/TIFF radiograph to float32 grey (bone bright, as stored).

    Args:
        path: the image file.
        target_size: unused (raster files are decoded whole); kept to match ``read_dicom``.
        settings: limits to apply; ``get_settings()`` when omitted.

    Raises:
        ImageReadError: a subclass naming why the file cannot be used.
    """
    path = Path(path)
    image = _open(path, settings or get_settings())
    with image:
        meta = _metadata(path, image, FILE_FORMATS[str(image.format)])
        try:
            image.load()
            pixels = _grey_values(path, image)
        except (EOFError, SyntaxError) as error:
            raise TruncatedFileError(path, f"image data ends early: {error}") from error
        except (OSError, ValueError) as error:
            raise _undecodable(path, error) from error
    return Radiograph(pixels=pixels, meta=meta)
