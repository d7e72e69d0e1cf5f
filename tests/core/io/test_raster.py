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
    DecompressionBombError,
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
        with pytest.raises(DecompressionBombError) as raised:
            read(path)
        assert raised.value.reason == "decompression_bomb"


@pytest.mark.parametrize(
    ("content", "expected"),
    [("blank", DecompressionBombError), ("noise", DimensionsOutOfRangeError)],
)
def test_a_decode_over_max_file_bytes_is_a_bomb_only_from_a_tiny_file(
    tmp_path: Path, content: str, expected: type[ImageReadError]
) -> None:
    """1000 x 1000 px decode to 4 MB: from ~1 KB of blank that is a bomb, from ~1 MB a big image."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1000, 1000), np.uint8) if content == "noise" else None
    path = tmp_path / f"{content}.png"
    Image.fromarray(np.zeros((1000, 1000), np.uint8) if pixels is None else pixels).save(path)
    with pytest.raises(expected, match="over max_file_bytes"):
        read_raster_metadata(path, settings=Settings(max_file_bytes=2 * 2**20))


def test_pillows_own_bomb_refusal_of_a_large_file_stays_a_large_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow refuses past 2 x MAX_IMAGE_PIXELS whatever the file; ~90 KB of noise is no bomb."""
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 300), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(DimensionsOutOfRangeError, match="decompression bomb DOS"):
        read_raster_metadata(path)


def _with_chunk(png: bytes, chunk: bytes, before_idat: bool) -> bytes:
    at = png.index(b"IDAT") - 4 if before_idat else png.rindex(b"IEND") - 4
    return png[:at] + chunk + png[at:]


@pytest.mark.parametrize("before_idat", [True, False], ids=["before_idat", "after_idat"])
@pytest.mark.parametrize(
    "chunk",
    [
        _png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(4 * 2**20), 9)),
        _png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(4 * 2**20), 9)),
    ],
    ids=["zTXt", "iCCP"],
)
def test_a_png_chunk_inflating_past_pillows_bound_is_a_bomb(
    tmp_path: Path, chunk: bytes, before_idat: bool
) -> None:
    """4 MiB of zeros in a 4 KB compressed text or ICC chunk: Pillow stops at 1 MiB."""
    path = tmp_path / "knee.png"
    Image.fromarray(_grey(8)).save(path)
    path.write_bytes(_with_chunk(path.read_bytes(), chunk, before_idat))
    with pytest.raises(DecompressionBombError, match="MAX_TEXT_CHUNK"):
        read_raster(path)


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
