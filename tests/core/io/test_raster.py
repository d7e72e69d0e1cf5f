"""koa_core.io.raster: 8/16-bit PNG, JPEG and TIFF; grey-in-colour, colour, bombs and names."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from koa_core.config import Settings
from koa_core.errors import (
    BitDepthError,
    ColourImageError,
    DimensionsOutOfRangeError,
    ImageReadError,
    UnsupportedImageError,
)
from koa_core.io.raster import laterality_from_name, read_raster, read_raster_metadata
from tests.dicom_factory import knee_like_pixels


def _grey(bits: int) -> np.ndarray:
    return knee_like_pixels(300, 260, bits_stored=bits)


@pytest.mark.parametrize(
    ("suffix", "bits", "file_format"),
    [(".png", 8, "png"), (".png", 16, "png"), (".tif", 8, "tiff"), (".tif", 16, "tiff")],
)
def test_lossless_grey_images_read_exactly(
    tmp_path: Path, suffix: str, bits: int, file_format: str
) -> None:
    stored = _grey(bits)
    path = tmp_path / f"knee{suffix}"
    Image.fromarray(stored).save(path)
    radiograph = read_raster(path)
    np.testing.assert_array_equal(radiograph.pixels, stored.astype(np.float32))
    meta = radiograph.meta
    assert (meta.file_format, meta.bits_stored, meta.photometric_interpretation) == (
        file_format,
        bits,
        "MONOCHROME2",
    )
    assert (meta.rows, meta.columns) == stored.shape
    assert read_raster_metadata(path) == meta


def test_jpeg_reads_close_to_what_was_written(tmp_path: Path) -> None:
    stored = _grey(8)
    path = tmp_path / "knee.jpg"
    Image.fromarray(stored).save(path, quality=95)
    radiograph = read_raster(path)
    assert radiograph.meta.file_format == "jpeg"
    assert float(np.abs(radiograph.pixels - stored).mean()) < 2.0


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_rgb_with_equal_channels_is_read_as_grey(tmp_path: Path, suffix: str) -> None:
    stored = _grey(8)
    path = tmp_path / f"rgb{suffix}"
    Image.fromarray(np.stack([stored] * 3, axis=-1)).save(path)
    pixels = read_raster(path).pixels
    assert pixels.shape == stored.shape
    assert float(np.abs(pixels - stored).mean()) < 2.0


def test_grey_palette_is_read_and_colour_palette_refused(tmp_path: Path) -> None:
    stored = _grey(8)
    grey = Image.fromarray(stored).convert("P")
    grey.putpalette([v for level in range(256) for v in (level, level, level)])
    grey.save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_raster(tmp_path / "grey.png").pixels, stored)
    grey.putpalette([v for level in range(256) for v in (level, 255 - level, 0)])
    grey.save(tmp_path / "colour.png")
    with pytest.raises(ColourImageError):
        read_raster(tmp_path / "colour.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_true_colour_is_refused(tmp_path: Path, suffix: str) -> None:
    stored = _grey(8)
    path = tmp_path / f"colour{suffix}"
    Image.fromarray(np.stack([stored, stored // 2, 255 - stored], axis=-1)).save(path)
    with pytest.raises(ColourImageError):
        read_raster(path)


def test_float_and_one_bit_images_are_refused(tmp_path: Path) -> None:
    Image.fromarray(_grey(8).astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(UnsupportedImageError):
        read_raster_metadata(tmp_path / "float.tif")
    Image.fromarray(_grey(8) > 128).save(tmp_path / "mask.png")
    with pytest.raises(BitDepthError):
        read_raster_metadata(tmp_path / "mask.png")


def test_an_image_over_max_image_px_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(_grey(8)).save(path)
    with pytest.raises(DimensionsOutOfRangeError):
        read_raster(path, settings=Settings(max_image_px=100))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def test_a_png_decompression_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    """A 60000 x 60000 header over a few bytes of data: 3.6 GB if anything allocated it."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(60001) * 16))
        + _png_chunk(b"IEND", b"")
    )
    for read in (read_raster_metadata, read_raster):
        with pytest.raises(DimensionsOutOfRangeError):
            read(path)


def test_a_truncated_png_raises_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(_grey(16)).save(path)
    path.write_bytes(path.read_bytes()[:-2000])
    assert read_raster_metadata(path).rows == 300
    with pytest.raises(ImageReadError) as raised:
        read_raster(path)
    assert raised.value.reason in ("truncated", "corrupt")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("knee_L.png", "L"),
        ("0001-left.jpg", "L"),
        ("R_knee.tif", "R"),
        ("patient 7 RIGHT.png", "R"),
        ("lateral.png", None),
        ("LR.png", None),
        ("left_and_right.png", None),
        ("knee.png", None),
    ],
)
def test_laterality_is_parsed_only_from_a_clear_name(name: str, expected: str | None) -> None:
    assert laterality_from_name(Path(name)) == expected


def test_png_text_chunks_give_laterality_and_spacing(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("laterality", "L")
    info.add_text("pixel_spacing_mm", "0.2")
    path = tmp_path / "knee_R.png"  # the file's own text chunk wins over its name
    Image.fromarray(_grey(16)).save(path, pnginfo=info)
    meta = read_raster_metadata(path)
    assert (meta.laterality, meta.pixel_spacing_mm) == ("L", (0.2, 0.2))


def test_small_public_dataset_crops_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "kaggle.png"
    Image.fromarray(knee_like_pixels(224, 224, bits_stored=8)).save(path)
    assert read_raster(path).pixels.shape == (224, 224)
