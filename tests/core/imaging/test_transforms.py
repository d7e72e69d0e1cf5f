"""Invariants of the preprocessing transforms, each tested on its own."""

from __future__ import annotations

import numpy as np
import pytest

from koa_core.imaging.transforms import (
    HISTOGRAM_BINS,
    centre_crop,
    clip_to_percentiles,
    histogram_percentiles,
    preprocess,
    resize,
    to_right_orientation,
)


@pytest.fixture
def radiograph() -> np.ndarray:
    rng = np.random.default_rng(7)
    rows, columns = 600, 480
    y, x = np.mgrid[0:rows, 0:columns]
    # An asymmetric bright blob so a mirror is detectable, plus noise and a saturated edge.
    image = 1000.0 + 3000.0 * np.exp(-(((x - 150) / 60.0) ** 2 + ((y - 300) / 120.0) ** 2))
    image += rng.normal(0, 50, size=image.shape)
    image[:, :10] = 4095.0
    return image.astype(np.float32)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
@pytest.mark.parametrize("percentile", [0.5, 5.0, 50.0, 99.5])
def test_histogram_percentiles_match_numpy_within_one_bin(dtype: type, percentile: float) -> None:
    rng = np.random.default_rng(1)
    high = 200 if dtype is np.uint8 else 4000
    image = rng.integers(0, high, size=(300, 200)).astype(dtype)
    (estimate,) = histogram_percentiles(image, (percentile,))
    exact = float(np.percentile(image, percentile))
    bin_width = (float(image.max()) - float(image.min())) / HISTOGRAM_BINS
    assert abs(estimate - exact) <= max(bin_width, 1.0) + 1e-6


def test_clip_maps_window_to_unit_range(radiograph: np.ndarray) -> None:
    clipped = clip_to_percentiles(radiograph)
    assert clipped.dtype == np.float32
    assert clipped.min() == 0.0 and clipped.max() == 1.0
    # 0.5 % at each end is clipped, give or take a bin.
    assert 0.002 < np.mean(clipped == 0.0) < 0.01


def test_constant_image_clips_to_zeros() -> None:
    assert not clip_to_percentiles(np.full((50, 50), 7.0)).any()


@pytest.mark.parametrize("value", [0.0, 7.0, 1000.0, 65535.0])
def test_a_flat_radiograph_preprocesses_to_zeros(value: float) -> None:
    # Resampling a constant leaves float rounding noise, narrower than any histogram bin.
    flat = np.full((611, 487), value, dtype=np.float32)
    assert not preprocess(flat, "L", 224, spacing_mm=0.2).pixels.any()


def test_clip_is_invariant_to_exposure(radiograph: np.ndarray) -> None:
    brighter = radiograph * 1.7 + 300.0
    np.testing.assert_allclose(
        clip_to_percentiles(radiograph), clip_to_percentiles(brighter), atol=2e-3
    )


@pytest.mark.parametrize("laterality, flipped", [("L", True), ("R", False), (None, False)])
def test_only_left_knees_are_mirrored(
    radiograph: np.ndarray, laterality: str | None, flipped: bool
) -> None:
    oriented, was_flipped = to_right_orientation(radiograph, laterality)
    assert was_flipped is flipped
    expected = radiograph[:, ::-1] if flipped else radiograph
    np.testing.assert_array_equal(oriented, expected)


def test_left_knee_is_the_mirror_of_the_right(radiograph: np.ndarray) -> None:
    left = preprocess(radiograph[:, ::-1], "L", 128, spacing_mm=0.2)
    right = preprocess(radiograph, "R", 128, spacing_mm=0.2)
    assert left.flipped and not right.flipped
    np.testing.assert_allclose(left.pixels, right.pixels, atol=1e-5)


@pytest.mark.parametrize(
    "spacing_mm, expected_side", [(None, 480), (0.5, 300), (0.25, 480), (1.0, 150)]
)
def test_centre_crop_keeps_a_fixed_physical_field(
    radiograph: np.ndarray, spacing_mm: float | None, expected_side: int
) -> None:
    crop = centre_crop(radiograph, spacing_mm, field_mm=150.0)
    assert crop.shape == (expected_side, expected_side)
    rows, columns = radiograph.shape
    top, left = (rows - expected_side) // 2, (columns - expected_side) // 2
    np.testing.assert_array_equal(
        crop, radiograph[top : top + expected_side, left : left + expected_side]
    )


@pytest.mark.parametrize("size", [64, 224])
def test_resize_is_antialiased_and_in_range(size: int) -> None:
    stripes = np.tile(np.array([0.0, 1.0], dtype=np.float32), (512, 256))
    resized = resize(stripes, size)
    assert resized.shape == (size, size)
    # Antialiasing averages fine stripes to grey instead of aliasing them to 0 or 1.
    assert abs(float(resized.mean()) - 0.5) < 0.01
    assert float(resized.std()) < 0.05


def test_preprocess_is_deterministic_and_bounded(radiograph: np.ndarray) -> None:
    first = preprocess(radiograph, "R", 224, spacing_mm=0.15)
    second = preprocess(radiograph.copy(), "R", 224, spacing_mm=0.15)
    np.testing.assert_array_equal(first.pixels, second.pixels)
    assert first.pixels.shape == (224, 224) and first.pixels.dtype == np.float32
    assert first.pixels.min() >= 0.0 and first.pixels.max() <= 1.0
