"""A result's Part 10 bytes: the SR's code sequences from the per-process cache, same file."""

from __future__ import annotations

import io

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset

from koa_core.delivery.capture import build_capture
from koa_core.delivery.encoding import _raw_sequence, part10_bytes
from koa_core.delivery.findings import FilmFindings
from koa_core.delivery.readback import read_report
from koa_core.delivery.report import build_report
from tests.core.delivery.films import film, film_header, knee


def _plain(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _utf8_header() -> Dataset:
    header = film_header(31)
    header.SpecificCharacterSet = "ISO_IR 192"
    header.PatientName = "Müller^Jürgen"
    return header


@pytest.mark.parametrize(
    "scored",
    [
        film(30),
        film(32, knees=(knee("L", 4, True),)),
        film(33, header=_utf8_header()),
    ],
    ids=["bilateral", "one-knee", "utf-8"],
)
def test_the_report_is_the_file_pydicom_writes_with_its_codes_from_the_cache(
    scored: FilmFindings,
) -> None:
    report = build_report(scored)
    expected = _plain(report)
    assert part10_bytes(report) == expected
    # Written again, its codes now all from the cache, and read back: same file, same values.
    hits = _raw_sequence.cache_info().hits
    assert part10_bytes(report) == expected
    assert _raw_sequence.cache_info().hits - hits > 20 * len(scored.knees)
    read = read_report(pydicom.dcmread(io.BytesIO(expected)))
    assert [knee.kl_grade for knee in read] == [knee.kl_grade for knee in scored.knees]


def test_the_tree_is_put_back_as_it_was() -> None:
    report = build_report(film(36))
    part10_bytes(report)
    assert all(isinstance(item, hd.sr.ContentItem) for item in report.ContentSequence)
    name = report.ContentSequence[0].ConceptNameCodeSequence[0]
    assert isinstance(name, hd.sr.CodedConcept) and report.original_encoding == (None, None)


def test_a_tree_with_an_ambiguous_vr_is_left_for_pydicom_to_correct() -> None:
    report = build_report(film(34))
    report.ContentSequence[0].add_new(0x00280106, "US or SS", 7)  # SmallestImagePixelValue
    report.PixelRepresentation = 0  # what pydicom resolves it by
    calls = _raw_sequence.cache_info().misses + _raw_sequence.cache_info().hits
    fast = part10_bytes(report)
    assert _raw_sequence.cache_info().misses + _raw_sequence.cache_info().hits == calls
    assert fast == _plain(report)
    assert pydicom.dcmread(io.BytesIO(fast)).ContentSequence[0][0x00280106].VR == "US"


@pytest.mark.parametrize("lossless", [False, True])
def test_a_capture_is_written_as_pydicom_writes_it(lossless: bool) -> None:
    capture = build_capture(film(35), lossless=lossless)
    assert part10_bytes(capture) == _plain(capture)
