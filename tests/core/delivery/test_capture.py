"""The Secondary Capture: the overlay (JPEG or RGB), burned-in annotation, the film's study."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage

from koa_core.delivery.capture import build_capture
from koa_core.delivery.report import build_report
from koa_core.errors import ResultBuildError
from tests.core.delivery.films import assert_shows_overlay, film, knee


def _round_trip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def test_capture_holds_the_overlay_in_the_films_study_and_its_own_series() -> None:
    scored = film(1)
    sc = _round_trip(build_capture(scored))
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sc.StudyInstanceUID == scored.source.StudyInstanceUID
    assert sc.SeriesInstanceUID not in (
        scored.source.SeriesInstanceUID,
        build_report(scored).SeriesInstanceUID,
    )
    assert sc.PhotometricInterpretation == "YBR_FULL_422" and sc.SamplesPerPixel == 3
    assert sc.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert_shows_overlay(sc.pixel_array, scored.overlay)
    assert sc.BurnedInAnnotation == "YES"
    assert list(sc.ImageType) == ["DERIVED", "SECONDARY", "KOA"]
    assert sc.Manufacturer == "koa"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == scored.source.SOPInstanceUID
    assert sc.PatientID == scored.source.PatientID


def test_a_jpeg_capture_says_it_was_compressed_lossily_and_how_much() -> None:
    scored = film(1)
    sc = _round_trip(build_capture(scored))
    assert (sc.LossyImageCompression, sc.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    frame_bytes = len(pydicom.encaps.get_frame(sc.PixelData, 0))
    assert float(sc.LossyImageCompressionRatio) == pytest.approx(
        scored.overlay.nbytes / frame_bytes, rel=0.01
    )
    assert float(sc.LossyImageCompressionRatio) > 5


def test_a_lossless_capture_holds_the_overlays_exact_rgb_pixels() -> None:
    scored = film(1)
    sc = _round_trip(build_capture(scored, lossless=True))
    assert sc.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert sc.PhotometricInterpretation == "RGB" and "LossyImageCompression" not in sc
    np.testing.assert_array_equal(sc.pixel_array, scored.overlay)


@pytest.mark.parametrize(
    ("sides", "laterality"), [(("R",), "R"), (("L",), "L"), (("R", "L"), "B"), ((), "U")]
)
def test_image_laterality_names_the_knees_shown(sides: tuple[str, ...], laterality: str) -> None:
    knees = tuple(knee(side, 2) for side in sides)
    assert build_capture(film(2, knees=knees)).ImageLaterality == laterality


def test_capture_uids_are_stable_per_film_and_model() -> None:
    assert build_capture(film(3)).SOPInstanceUID == build_capture(film(3)).SOPInstanceUID
    assert build_capture(film(3)).SOPInstanceUID != build_capture(film(4)).SOPInstanceUID
    assert build_capture(film(3)).SOPInstanceUID != build_report(film(3)).SOPInstanceUID


@pytest.mark.parametrize(
    "bad",
    [np.zeros((32, 32), np.uint8), np.zeros((32, 32, 4), np.uint8), np.zeros((32, 32, 3), float)],
    ids=["grey", "rgba", "float"],
)
def test_an_overlay_that_is_not_rgb_uint8_is_refused(bad: np.ndarray) -> None:
    scored = film(5)
    with pytest.raises(ResultBuildError):
        build_capture(type(scored)(scored.source, scored.knees, scored.algorithm, bad))
