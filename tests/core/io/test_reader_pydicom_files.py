"""koa_core.io.reader on every file pydicom ships, and format sniffing by content."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels.processing import apply_modality_lut

from koa_core.config import Settings
from koa_core.errors import (
    BitDepthError,
    ColourImageError,
    CorruptImageError,
    ImageReadError,
    MultiFrameError,
    NoPixelDataError,
    NotDicomError,
    TruncatedFileError,
    UnsupportedImageError,
)
from koa_core.io.reader import read_metadata, read_radiograph, sniff_format
from tests.dicom_factory import (
    PYDICOM_TEST_FILES,
    knee_like_pixels,
    make_dataset,
    pydicom_test_files,
    write_dicom,
)

# pydicom's test images are 16-512 px: lift the minimum so they are decoded, not refused.
PERMISSIVE = Settings(min_image_px=1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "path", pydicom_test_files(), ids=lambda p: str(p.relative_to(PYDICOM_TEST_FILES))
)
def test_every_shipped_file_reads_or_raises_a_named_error(path: Path) -> None:
    for read in (
        lambda: read_metadata(path, settings=PERMISSIVE),
        lambda: read_radiograph(path, settings=PERMISSIVE),
        lambda: read_radiograph(path, target_size=32, settings=PERMISSIVE),
        lambda: read_metadata(path),
    ):
        try:
            result = read()
        except ImageReadError as error:
            assert error.path == str(path) and error.detail
            continue
        pixels = getattr(result, "pixels", None)
        if pixels is not None:
            assert pixels.ndim == 2 and pixels.dtype == np.float32 and pixels.dtype.isnative


MR_SMALL_VARIANTS = [
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]


@pytest.mark.parametrize("name", MR_SMALL_VARIANTS)
def test_each_encoding_of_mr_small_decodes_to_the_same_pixels(name: str) -> None:
    reference = read_radiograph(PYDICOM_TEST_FILES / "MR_small.dcm", settings=PERMISSIVE)
    variant = read_radiograph(PYDICOM_TEST_FILES / name, settings=PERMISSIVE)
    np.testing.assert_array_equal(variant.pixels, reference.pixels)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("JPGExtended.dcm", (1024, 256)),
        ("JPEG2000.dcm", (1024, 256)),
        ("JPEGLSNearLossless_16.dcm", (50, 10)),
        ("693_J2KI.dcm", (512, 512)),
        ("image_dfl.dcm", (512, 512)),
        ("CT_small.dcm", (128, 128)),
    ],
)
def test_shipped_images_decode_like_pydicom(name: str, shape: tuple[int, int]) -> None:
    path = PYDICOM_TEST_FILES / name
    ds = pydicom.dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    radiograph = read_radiograph(path, settings=PERMISSIVE)
    assert radiograph.pixels.shape == shape
    np.testing.assert_allclose(radiograph.pixels, expected)


def test_shipped_monochrome1_cr_is_inverted() -> None:
    path = PYDICOM_TEST_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    stored = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    pixels = read_radiograph(path, settings=PERMISSIVE).pixels
    # Inversion is a reflection: the order of every pair of pixels flips.
    np.testing.assert_allclose(pixels + stored, np.full_like(stored, pixels[0, 0] + stored[0, 0]))


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("MR_truncated.dcm", TruncatedFileError),
        ("JPEG-lossy.dcm", CorruptImageError),
        ("JPEG2000-embedded-sequence-delimiter.dcm", CorruptImageError),
        ("badVR.dcm", CorruptImageError),
        ("dicomdirtests/DICOMDIR", UnsupportedImageError),
        ("test-SR.dcm", NoPixelDataError),
        ("rtstruct.dcm", NoPixelDataError),
        ("SC_rgb_jpeg.dcm", ColourImageError),
        ("examples_palette.dcm", ColourImageError),
        ("rtdose.dcm", MultiFrameError),
        ("liver_1frame.dcm", BitDepthError),
        ("README.txt", NotDicomError),
        ("zipMR.gz", NotDicomError),
    ],
)
def test_known_bad_shipped_files_raise_their_named_error(
    name: str, error: type[ImageReadError]
) -> None:
    with pytest.raises(error):
        read_radiograph(PYDICOM_TEST_FILES / name, settings=PERMISSIVE)


def test_gzip_is_named_as_gzip() -> None:
    with pytest.raises(NotDicomError, match="gzip"):
        read_metadata(PYDICOM_TEST_FILES / "zipMR.gz")


def test_format_is_sniffed_from_content_not_the_name(tmp_path: Path) -> None:
    dicom = write_dicom(tmp_path / "x.dcm")
    shutil.copyfile(dicom, tmp_path / "really-dicom.png")
    png = tmp_path / "really-png.dcm"
    Image.fromarray(knee_like_pixels(bits_stored=8)).save(png, format="PNG")
    assert sniff_format(tmp_path / "really-dicom.png") == "dicom"
    assert read_metadata(tmp_path / "really-dicom.png").file_format == "dicom"
    assert sniff_format(png) == "raster"
    assert read_radiograph(png).meta.file_format == "png"


def test_dual_format_preamble_is_read_as_dicom() -> None:
    """CT_small.dcm's preamble holds a TIFF header; DICM must win."""
    path = PYDICOM_TEST_FILES / "CT_small.dcm"
    assert path.read_bytes()[:4] == b"II*\x00"
    assert read_metadata(path, settings=PERMISSIVE).file_format == "dicom"


def test_format_is_sniffed_from_content(tmp_path: Path) -> None:
    text = tmp_path / "notes.dcm"
    text.write_text("not an image")
    assert sniff_format(write_dicom(tmp_path / "x.txt")) == "dicom"
    with pytest.raises(NotDicomError):
        sniff_format(text)
    with pytest.raises(ImageReadError):
        sniff_format(tmp_path / "missing.dcm")


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_reader_passes_target_size_to_jpeg2000(tmp_path: Path, laterality: str) -> None:
    ds = make_dataset(knee_like_pixels(1024, 1024), laterality=laterality, spacing_mm=None)
    path = write_dicom(tmp_path / "j2k.dcm", ds, syntax="jpeg2000")
    radiograph = read_radiograph(path, target_size=224)
    assert (radiograph.decode_scale, radiograph.meta.laterality) == (4, laterality)
