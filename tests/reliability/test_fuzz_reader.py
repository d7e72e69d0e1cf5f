"""Fuzzing the reader: mutated DICOM bytes give an image or a named ImageReadError, nothing else."""

from __future__ import annotations

import signal
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koa_core.config import Settings
from koa_core.errors import ImageReadError
from koa_core.io.reader import read_metadata, read_radiograph
from tests.dicom_factory import knee_like_pixels, make_dataset, write_dicom

SEED_SYNTAXES = ("explicit", "implicit", "big_endian", "deflated", "rle", "jpeg2000")
# Small images keep an example in milliseconds; the limits let them reach the decoder.
FUZZ_SETTINGS = Settings(min_image_px=8, max_image_px=4096, max_file_bytes=2**24)
PER_EXAMPLE_TIMEOUT_S = 10
SHORT_EXAMPLES, LONG_EXAMPLES = 150, 5000
# (0028,0010) Rows, (0028,0011) Columns, (0028,0100) BitsAllocated, (0028,0101) BitsStored,
# (0028,0002) SamplesPerPixel, (0028,0008) NumberOfFrames, (7FE0,0010) PixelData.
HEADER_TAGS = (
    (0x0028, 0x0010),
    (0x0028, 0x0011),
    (0x0028, 0x0100),
    (0x0028, 0x0101),
    (0x0028, 0x0002),
    (0x0028, 0x0008),
    (0x7FE0, 0x0010),
)


class ExampleTimeout(Exception):
    """One example ran past ``PER_EXAMPLE_TIMEOUT_S``: the reader hung."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise ExampleTimeout(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz-seeds")
    found = {}
    for syntax in SEED_SYNTAXES:
        ds = make_dataset(
            knee_like_pixels(rows=64, columns=48, bits_stored=12),
            photometric="MONOCHROME1" if syntax == "implicit" else "MONOCHROME2",
            rescale=(2.0, -100.0) if syntax == "explicit" else None,
        )
        found[syntax] = write_dicom(folder / f"{syntax}.dcm", ds, syntax=syntax).read_bytes()
    return found


_positions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
_mutation = st.one_of(
    st.tuples(st.just("flip"), _positions, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _positions, st.just(0)),
    st.tuples(st.just("insert"), _positions, st.integers(0, 255)),
    st.tuples(st.just("delete"), _positions, st.integers(1, 64)),
    st.tuples(st.just("field"), st.integers(0, len(HEADER_TAGS) - 1), st.integers(0, 2**32 - 1)),
)


def mutate(data: bytes, mutations: list[tuple[str, float, int]]) -> bytes:
    """Apply bit flips, truncations, insertions, deletions and header value rewrites."""
    buffer = bytearray(data)
    for kind, where, value in mutations:
        at = min(int(where * len(buffer)), max(len(buffer) - 1, 0))
        if kind == "flip" and buffer:
            buffer[at] ^= 1 << value
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "insert":
            buffer[at:at] = bytes([value])
        elif kind == "delete":
            del buffer[at : at + value]
        elif kind == "field":
            _rewrite_field(buffer, HEADER_TAGS[int(where)], value)
    return bytes(buffer)


def _rewrite_field(buffer: bytearray, tag: tuple[int, int], value: int) -> None:
    """Overwrite the value (or, for PixelData, the length) of an element, little endian."""
    offset = buffer.rfind(struct.pack("<HH", *tag))
    if offset < 0:
        return
    vr = bytes(buffer[offset + 4 : offset + 6])
    if tag == (0x7FE0, 0x0010):
        start = offset + 8 if vr in (b"OB", b"OW") else offset + 4
        buffer[start : start + 4] = struct.pack("<I", value)
    else:  # explicit VR US (tag, VR, 2-byte length) or implicit (tag, 4-byte length)
        buffer[offset + 8 : offset + 10] = struct.pack("<H", value & 0xFFFF)


def read_or_refuse(path: Path) -> str:
    """``"image"`` or the ImageReadError reason; any other exception propagates."""
    try:
        with time_limit(PER_EXAMPLE_TIMEOUT_S):
            read_metadata(path, settings=FUZZ_SETTINGS)
            radiograph = read_radiograph(path, target_size=16, settings=FUZZ_SETTINGS)
    except ImageReadError as error:
        return error.reason
    assert radiograph.pixels.ndim == 2 and radiograph.pixels.dtype == np.float32
    return "image"


def _fuzz(seeds: dict[str, bytes], path: Path, max_examples: int, derandomize: bool) -> None:
    """Run ``max_examples`` mutations and print what became of them."""
    outcomes: Counter[str] = Counter()

    @settings(max_examples=max_examples, derandomize=derandomize, **_common)
    @given(
        example=st.tuples(
            st.sampled_from(SEED_SYNTAXES), st.lists(_mutation, min_size=1, max_size=4)
        )
    )
    def one(example: tuple[str, list[tuple[str, float, int]]]) -> None:
        syntax, mutations = example
        path.write_bytes(mutate(seeds[syntax], mutations))
        outcomes[read_or_refuse(path)] += 1

    one()
    refused = sum(n for outcome, n in outcomes.items() if outcome != "image")
    print(
        f"\n[fuzz] inputs={sum(outcomes.values())} images={outcomes['image']} "
        f"refused={refused} crashed=0 lost=0 {dict(sorted(outcomes.items()))}"
    )


_common = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


def test_seeds_read_as_images(seeds: dict[str, bytes], tmp_path: Path) -> None:
    for syntax, data in seeds.items():
        (tmp_path / syntax).write_bytes(data)
        assert read_or_refuse(tmp_path / syntax) == "image", syntax


def test_mutated_dicom_reads_or_raises_a_named_error(
    seeds: dict[str, bytes], tmp_path: Path
) -> None:
    _fuzz(seeds, tmp_path / "fuzzed.dcm", SHORT_EXAMPLES, derandomize=True)


@pytest.mark.fuzz_long
def test_mutated_dicom_long_run(seeds: dict[str, bytes], tmp_path: Path) -> None:
    _fuzz(seeds, tmp_path / "fuzzed.dcm", LONG_EXAMPLES, derandomize=False)


def test_regression_rle_bit_flip_that_panicked_the_rust_decoder(
    seeds: dict[str, bytes], tmp_path: Path
) -> None:
    # Found by the fuzzer: one flipped bit in the RLE segment made pylibjpeg-rle panic
    # (pyo3 PanicException, a BaseException) instead of raising an error.
    data = bytearray(seeds["rle"])
    data[-3483] ^= 1 << 4
    (tmp_path / "rle.dcm").write_bytes(bytes(data))
    assert read_or_refuse(tmp_path / "rle.dcm") == "corrupt"


def test_regression_file_cut_inside_the_meta_group_length(
    seeds: dict[str, bytes], tmp_path: Path
) -> None:
    # Found by the long fuzz run: a file ending two bytes into (0002,0000)'s 4-byte UL
    # value made pydicom raise BytesLengthException, a bare Exception.
    (tmp_path / "cut.dcm").write_bytes(seeds["explicit"][:142])
    assert read_or_refuse(tmp_path / "cut.dcm") in ("corrupt", "truncated")
