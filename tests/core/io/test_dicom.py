"""koa_core.io.dicom: every transfer syntax, photometric, bit depth and bad-file kind."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import MPEG2MPML, BasicTextSRStorage, JPEG2000Lossless

from koa_core.config import Settings
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
from koa_core.imaging.transforms import preprocess
from koa_core.io.codestream import codestream_size
from koa_core.io.dicom import read_dicom, read_dicom_metadata, resolution_level
from koa_core.io.record import ImageMetadata
from tests.dicom_factory import (
    PYDICOM_TEST_FILES,
    TRANSFER_SYNTAXES,
    dcmtk_missing,
    knee_like_pixels,
    make_dataset,
    write_dicom,
)

BIT_DEPTHS = [(8, False), (12, False), (16, False), (12, True), (16, True)]


def _syntax_or_skip(syntax: str) -> str:
    reason = dcmtk_missing(syntax)
    if reason:
        pytest.skip(reason)
    return syntax


@pytest.mark.parametrize("syntax", TRANSFER_SYNTAXES)
@pytest.mark.parametrize(("bits", "signed"), BIT_DEPTHS)
def test_every_lossless_syntax_returns_the_stored_values(
    tmp_path: Path, syntax: str, bits: int, signed: bool
) -> None:
    stored = knee_like_pixels(bits_stored=bits, signed=signed)
    path = write_dicom(
        tmp_path / "x.dcm", make_dataset(stored, bits_stored=bits), syntax=_syntax_or_skip(syntax)
    )
    radiograph = read_dicom(path)
    assert radiograph.pixels.dtype == np.float32 and radiograph.pixels.dtype.isnative
    np.testing.assert_array_equal(radiograph.pixels, stored.astype(np.float32))
    assert radiograph.decode_scale == 1
    assert radiograph.meta.transfer_syntax_uid == str(
        pydicom.dcmread(path).file_meta[0x00020010].value
    )


@pytest.mark.parametrize("syntax", ["explicit", "big_endian", "jpeg2000", "rle"])
@pytest.mark.parametrize(("bits", "signed"), BIT_DEPTHS)
def test_monochrome1_matches_monochrome2_after_preprocessing(
    tmp_path: Path, syntax: str, bits: int, signed: bool
) -> None:
    inputs = []
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        ds = make_dataset(bits_stored=bits, signed=signed, photometric=photometric)
        path = write_dicom(tmp_path / f"{photometric}.dcm", ds, syntax=syntax)
        radiograph = read_dicom(path)
        inputs.append(preprocess(radiograph.pixels, "R", 64).pixels)
    np.testing.assert_allclose(inputs[0], inputs[1], atol=2 / 255)


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path: Path) -> None:
    stored = knee_like_pixels(bits_stored=12)
    bright_bone = stored > np.percentile(stored, 90)
    path = write_dicom(tmp_path / "m1.dcm", make_dataset(stored, photometric="MONOCHROME1"))
    pixels = read_dicom(path).pixels
    assert pixels[bright_bone].mean() > pixels[~bright_bone].mean()


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (2.0, 0.0), (0.5, 100.0)])
def test_rescale_slope_and_intercept_are_applied(
    tmp_path: Path, slope: float, intercept: float
) -> None:
    stored = knee_like_pixels(bits_stored=12)
    ds = make_dataset(stored, rescale=(slope, intercept))
    pixels = read_dicom(write_dicom(tmp_path / "r.dcm", ds)).pixels
    np.testing.assert_allclose(pixels, stored * slope + intercept, rtol=1e-6)


@pytest.mark.parametrize(
    ("laterality", "keyword", "expected"),
    [
        ("L", "ImageLaterality", "L"),
        ("R", "ImageLaterality", "R"),
        ("L", "Laterality", "L"),
        ("R", "Laterality", "R"),
        ("B", "ImageLaterality", None),
        (None, "ImageLaterality", None),
    ],
)
def test_laterality_from_image_or_series_laterality(
    tmp_path: Path, laterality: str | None, keyword: str, expected: str | None
) -> None:
    ds = make_dataset(laterality=laterality, laterality_keyword=keyword)
    assert read_dicom_metadata(write_dicom(tmp_path / "lat.dcm", ds)).laterality == expected


@pytest.mark.parametrize("imager_only", [False, True])
def test_metadata_is_read_from_the_header(tmp_path: Path, imager_only: bool) -> None:
    ds = make_dataset(spacing_mm=(0.15, 0.175), imager_spacing_only=imager_only)
    path = write_dicom(tmp_path / "m.dcm", ds, syntax="jpeg2000")
    meta = read_dicom_metadata(path)
    assert (meta.rows, meta.columns) == ds.pixel_array.shape
    assert meta.sop_instance_uid == ds.SOPInstanceUID
    assert meta.study_instance_uid == ds.StudyInstanceUID
    assert meta.series_instance_uid == ds.SeriesInstanceUID
    assert meta.sop_class_uid == ds.SOPClassUID
    assert (meta.patient_id, meta.study_date, meta.modality) == ("KOA-TEST-1", "20240131", "DX")
    assert (meta.body_part_examined, meta.view_position) == ("KNEE", "PA")
    assert meta.pixel_spacing_mm == (0.15, 0.175)
    assert meta.image_type == ("ORIGINAL", "PRIMARY")
    assert (meta.file_format, meta.bits_stored, meta.photometric_interpretation) == (
        "dicom",
        12,
        "MONOCHROME2",
    )
    assert meta.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert (meta.number_of_frames, meta.samples_per_pixel, meta.manufacturer) == (
        1,
        1,
        "koa-tests",
    )
    assert meta == read_dicom(path).meta


def test_a_bare_data_set_without_preamble_is_read(tmp_path: Path) -> None:
    ds = make_dataset()
    path = tmp_path / "bare"
    ds.save_as(path, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_dicom(path).pixels, ds.pixel_array)


# -- JPEG 2000 reduced-resolution decode ------------------------------------------------


def _meta(rows: int, columns: int, spacing: float | None) -> ImageMetadata:
    return ImageMetadata(
        "x",
        "dicom",
        rows,
        columns,
        12,
        "MONOCHROME2",
        pixel_spacing_mm=(spacing, spacing) if spacing else None,
    )


@pytest.mark.parametrize(
    ("rows", "columns", "spacing", "target", "max_level", "expected"),
    [
        (1024, 1024, None, None, 5, 0),  # no target: full size
        (1024, 1024, None, 1024, 5, 0),  # half size would be 512 < 1024
        (1024, 1024, None, 512, 5, 1),  # 512 >= 512
        (1024, 1024, None, 224, 5, 2),  # 256 >= 224 > 128
        (1024, 1024, None, 100, 5, 3),  # 128 >= 100 > 64
        (1024, 1024, None, 224, 1, 1),  # the codestream has only one level
        (2000, 1000, None, 224, 5, 2),  # the shorter side decides: 250 >= 224
        (2500, 2500, 0.1, 224, 5, 2),  # 150 mm field = 1500 px: 375 >= 224 > 187
        (2500, 2500, 0.5, 224, 5, 0),  # field = 300 px: 150 < 224
        (1023, 1023, None, 256, 5, 2),  # openjpeg rounds up: ceil(1023 / 4) = 256
    ],
)
def test_resolution_level_is_the_lowest_still_covering_the_target(
    rows: int,
    columns: int,
    spacing: float | None,
    target: int | None,
    max_level: int,
    expected: int,
) -> None:
    assert resolution_level(_meta(rows, columns, spacing), target, max_level) == expected


@pytest.mark.parametrize(("target", "level"), [(None, 0), (512, 1), (224, 2), (100, 3)])
@pytest.mark.parametrize("signed", [False, True])
def test_jpeg2000_reduced_decode_matches_a_downsampled_full_decode(
    tmp_path: Path, target: int | None, level: int, signed: bool
) -> None:
    stored = knee_like_pixels(1024, 1024, bits_stored=12, signed=signed)
    ds = make_dataset(stored, bits_stored=12, spacing_mm=None)
    path = write_dicom(tmp_path / "j2k.dcm", ds, syntax="jpeg2000")
    reduced = read_dicom(path, target_size=target)
    factor = 2**level
    assert reduced.decode_scale == factor
    assert reduced.pixels.shape == (1024 // factor, 1024 // factor)
    block_means = stored.reshape(1024 // factor, factor, 1024 // factor, factor).mean(axis=(1, 3))
    error = np.abs(reduced.pixels - block_means)
    assert float(np.median(error)) < 0.01 * 4095
    assert reduced.meta.rows == 1024  # metadata describes the file, not the decode


def test_jpeg2000_reduced_monochrome1_is_still_bone_bright(tmp_path: Path) -> None:
    stored = knee_like_pixels(1024, 1024, bits_stored=12)
    inputs = []
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        ds = make_dataset(stored, photometric=photometric, spacing_mm=None)
        path = write_dicom(tmp_path / f"{photometric}.dcm", ds, syntax="jpeg2000")
        radiograph = read_dicom(path, target_size=224)
        assert radiograph.decode_scale == 4
        inputs.append(preprocess(radiograph.pixels, "R", 224).pixels)
    np.testing.assert_allclose(inputs[0], inputs[1], atol=2 / 255)


# -- codestreams: a codec decodes only the size the header was checked for -----------------

SIZED_SYNTAXES = ("jpeg2000", "jpeg_ls", "jpeg_lossless")
_SIZE_FIELDS = {  # the marker giving each frame's size, where it holds (rows, columns), how
    "jpeg2000": (b"\xff\x51", 6, ">2I", True),  # SIZ: Xsiz, Ysiz (columns first)
    "jpeg_ls": (b"\xff\xf7", 5, ">2H", False),  # SOF55
    "jpeg_lossless": (b"\xff\xc3", 5, ">2H", False),  # SOF3
}


def _resized(path: Path, syntax: str, rows: int, columns: int) -> Path:
    """The file at ``path`` with its frame's own SIZ or SOF size set to ``rows`` x ``columns``."""
    marker, offset, layout, columns_first = _SIZE_FIELDS[syntax]
    ds = pydicom.dcmread(path)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    size = (columns, rows) if columns_first else (rows, columns)
    struct.pack_into(layout, frame, frame.index(marker) + offset, *size)
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(path)
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target_size", [None, 64])
@pytest.mark.parametrize(("rows", "columns"), [(40000, 40000), (321, 288)])
@pytest.mark.parametrize("syntax", SIZED_SYNTAXES)
def test_a_codestream_sized_unlike_its_header_is_refused_before_decoding(
    tmp_path: Path, syntax: str, rows: int, columns: int, target_size: int | None
) -> None:
    """A 320 x 288 header over a codestream claiming 40000 x 40000 (3.2 GB) or one row more."""
    written = write_dicom(tmp_path / "k.dcm", syntax=_syntax_or_skip(syntax))
    path = _resized(written, syntax, rows, columns)
    assert read_dicom_metadata(path).rows == 320  # the header alone is fine
    with pytest.raises(CorruptImageError, match=f"codestream is {rows}x{columns} px"):
        read_dicom(path, target_size=target_size)


def test_a_jp2_wrapper_is_walked_to_its_codestream_and_a_zero_length_box_refused() -> None:
    """DICOM forbids JP2 wrappers; a (jp2c) box is still read, a box of length 0 before it is
    refused: pydicom's own JP2 walk never ends on one."""
    signature = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    siz = b"\xff\x4f\xff\x51\x00\x29\x00\x00" + struct.pack(">4I", 288, 320, 0, 0)
    ftyp = struct.pack(">I4s", 20, b"ftyp") + b"jp2 " + bytes(8)
    jp2c = struct.pack(">I4s", 0, b"jp2c") + siz
    assert codestream_size(signature + ftyp + jp2c, JPEG2000Lossless) == (320, 288)
    looping = signature + struct.pack(">I4s", 0, b"ftyp") + jp2c
    assert codestream_size(looping, JPEG2000Lossless) is None


# -- bad files: every kind raises its named error ---------------------------------------


def _valid(tmp_path: Path) -> Path:
    return write_dicom(tmp_path / "valid.dcm")


def _zero_byte(tmp_path: Path) -> Path:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    return path


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.dcm"
    path.write_text("patient,grade\n1,3\n" * 20)
    return path


def _gzip(tmp_path: Path) -> Path:
    path = tmp_path / "image.dcm.gz"
    path.write_bytes(gzip.compress(_valid(tmp_path).read_bytes()))
    return path


def _garbage_like_a_bare_data_set(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\x08\x00" + bytes(range(256)) * 4)
    return path


def _cut(tmp_path: Path, keep: Callable[[bytes, Dataset], int]) -> Path:
    ds = make_dataset()
    path = write_dicom(tmp_path / "cut.dcm", ds)
    data = path.read_bytes()
    path.write_bytes(data[: keep(data, ds)])
    return path


def _header_cut(tmp_path: Path) -> Path:
    return _cut(tmp_path, lambda data, ds: 400)


def _meta_cut(tmp_path: Path) -> Path:
    return _cut(tmp_path, lambda data, ds: 150)


def _pixels_cut(tmp_path: Path) -> Path:
    return _cut(tmp_path, lambda data, ds: len(data) - len(ds.PixelData) // 2)


def _dataset_file(
    tmp_path: Path, change: Callable[[Dataset], None], syntax: str = "explicit"
) -> Path:
    ds = make_dataset()
    change(ds)
    return write_dicom(tmp_path / "bad.dcm", ds, syntax=syntax)


def _absurd_dimensions(tmp_path: Path) -> Path:
    def change(ds: Dataset) -> None:
        ds.Rows = ds.Columns = 65535
        ds.PixelData = bytes(64)

    return _dataset_file(tmp_path, change)


def _too_small(tmp_path: Path) -> Path:
    stored = knee_like_pixels(64, 300)
    return write_dicom(tmp_path / "small.dcm", make_dataset(stored))


def _multi_frame(tmp_path: Path) -> Path:
    def change(ds: Dataset) -> None:
        frames = np.stack([ds.pixel_array] * 3)
        ds.set_pixel_data(frames, "MONOCHROME2", 12)

    return _dataset_file(tmp_path, change)


def _rgb(tmp_path: Path) -> Path:
    def change(ds: Dataset) -> None:
        grey = (ds.pixel_array >> 4).astype(np.uint8)
        ds.set_pixel_data(np.stack([grey, grey, grey // 2], axis=-1), "RGB", 8)

    return _dataset_file(tmp_path, change)


def _palette(tmp_path: Path) -> Path:
    return _dataset_file(
        tmp_path, lambda ds: setattr(ds, "PhotometricInterpretation", "PALETTE COLOR")
    )


def _one_bit(tmp_path: Path) -> Path:
    def change(ds: Dataset) -> None:
        ds.set_pixel_data((ds.pixel_array > 2000).astype(np.uint8), "MONOCHROME2", 1)

    return _dataset_file(tmp_path, change)


def _thirty_two_bit(tmp_path: Path) -> Path:
    def change(ds: Dataset) -> None:
        # set_pixel_data stops at 16 bits: write the 32-bit module by hand.
        ds.PixelData = (ds.pixel_array.astype(np.uint32) << 16).tobytes()
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31

    return _dataset_file(tmp_path, change)


def _structured_report(tmp_path: Path) -> Path:
    def change(ds: Dataset) -> None:
        for keyword in ("Rows", "Columns", "BitsStored", "BitsAllocated", "PixelData"):
            delattr(ds, keyword)
        ds.SOPClassUID = BasicTextSRStorage
        ds.Modality = "SR"

    return _dataset_file(tmp_path, change)


def _image_without_pixel_data(tmp_path: Path) -> Path:
    return _dataset_file(tmp_path, lambda ds: delattr(ds, "PixelData"))


def _float_pixels(tmp_path: Path) -> Path:
    def change(ds: Dataset) -> None:
        ds.FloatPixelData = ds.pixel_array.astype(np.float32).tobytes()
        for keyword in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
            delattr(ds, keyword)
        ds.BitsAllocated = 32

    return _dataset_file(tmp_path, change)


def _mpeg2(tmp_path: Path) -> Path:
    ds = make_dataset()
    ds.PixelData = encapsulate([bytes(1000)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    path = tmp_path / "video.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _deeply_nested(tmp_path: Path) -> Path:
    """An undefined-length sequence nested 5000 deep just after the file meta."""
    sequence = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = _valid(tmp_path).read_bytes()
    meta_end = 144 + struct.unpack("<I", data[140:144])[0]
    path = tmp_path / "nested.dcm"
    path.write_bytes(data[:meta_end] + (sequence + item) * 5000 + close * 5000 + data[meta_end:])
    return path


def _dicomdir(tmp_path: Path) -> Path:
    return PYDICOM_TEST_FILES / "dicomdirtests" / "DICOMDIR"


HEADER, PIXELS = "header", "pixels"
BAD_FILES = [
    ("zero_byte", _zero_byte, EmptyFileError, HEADER, ""),
    ("text", _text, NotDicomError, HEADER, ""),
    ("gzip", _gzip, NotDicomError, HEADER, "gzip"),
    ("garbage_bare", _garbage_like_a_bare_data_set, NotDicomError, HEADER, ""),
    ("meta_cut", _meta_cut, TruncatedFileError, HEADER, ""),
    ("header_cut", _header_cut, TruncatedFileError, HEADER, ""),
    ("pixels_cut", _pixels_cut, TruncatedFileError, PIXELS, ""),
    ("absurd_dimensions", _absurd_dimensions, DimensionsOutOfRangeError, HEADER, ""),
    ("too_small", _too_small, DimensionsOutOfRangeError, HEADER, ""),
    ("multi_frame", _multi_frame, MultiFrameError, HEADER, ""),
    ("rgb", _rgb, ColourImageError, HEADER, ""),
    ("palette", _palette, ColourImageError, HEADER, ""),
    ("one_bit", _one_bit, BitDepthError, HEADER, ""),
    ("thirty_two_bit", _thirty_two_bit, BitDepthError, HEADER, ""),
    ("structured_report", _structured_report, NoPixelDataError, HEADER, "SR"),
    ("no_pixel_data", _image_without_pixel_data, NoPixelDataError, PIXELS, ""),
    ("float_pixels", _float_pixels, UnsupportedImageError, HEADER, ""),
    ("mpeg2", _mpeg2, UnsupportedTransferSyntaxError, PIXELS, "MPEG2"),
    ("deeply_nested", _deeply_nested, CorruptImageError, HEADER, "nested"),
    ("dicomdir", _dicomdir, UnsupportedImageError, HEADER, "DICOMDIR"),
]


@pytest.mark.parametrize(
    ("build", "error", "stage", "says"),
    [pytest.param(*row[1:], id=row[0]) for row in BAD_FILES],
)
def test_each_bad_file_raises_its_named_error(
    tmp_path: Path,
    build: Callable[[Path], Path],
    error: type[ImageReadError],
    stage: str,
    says: str,
) -> None:
    path = build(tmp_path)
    match = says or None
    if stage == HEADER:
        with pytest.raises(error, match=match) as raised:
            read_dicom_metadata(path)
        assert raised.value.path == str(path)
    else:
        assert read_dicom_metadata(path).rows > 0
    with pytest.raises(error, match=match) as raised:
        read_dicom(path)
    assert type(raised.value) is error and raised.value.detail


def test_a_file_over_max_file_bytes_is_refused_before_reading(tmp_path: Path) -> None:
    path = _valid(tmp_path)
    small = Settings(max_file_bytes=path.stat().st_size - 1)
    with pytest.raises(FileTooLargeError):
        read_dicom_metadata(path, settings=small)
    with pytest.raises(FileTooLargeError):
        read_dicom(path, settings=small)
