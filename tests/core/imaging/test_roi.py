"""The knee ROI: placement, truncation share, padding and mirroring."""

from __future__ import annotations

import numpy as np
import pytest

from koa_core.imaging.roi import RoiBox, crop_roi, off_film_share, roi_box, roi_input


@pytest.mark.parametrize("spacing_mm", [0.1, 0.15, 0.5])
def test_box_is_roi_mm_wide_and_centred_on_the_joint(spacing_mm: float) -> None:
    box = roi_box(centre_x=900.3, centre_y=400.7, spacing_mm=spacing_mm, roi_mm=140.0)
    assert box.side == round(140.0 / spacing_mm)
    top, bottom, left, right = box.bounds
    assert abs((left + right) / 2 - 900.3) <= 1.0
    assert abs((top + bottom) / 2 - 400.7) <= 1.0


@pytest.mark.parametrize(
    ("box", "share"),
    [
        (RoiBox(10, 10, 50), 0.0),
        (RoiBox(-25, 10, 50), 0.5),
        (RoiBox(-25, -25, 50), 0.75),
        (RoiBox(100, 100, 50), 1.0),
    ],
)
def test_off_film_share(box: RoiBox, share: float) -> None:
    assert off_film_share(box, (100, 100)) == pytest.approx(share)


def test_crop_fills_beyond_the_edge_with_the_darkest_value_inside() -> None:
    image = np.arange(100 * 100, dtype=np.float32).reshape(100, 100) + 5
    field = crop_roi(image, RoiBox(-10, 90, 20))
    assert field.shape == (20, 20)
    assert np.all(field[:10] == field[10:, :10].min())
    assert np.all(field[:, 10:] == field[10:, :10].min())
    assert np.array_equal(field[10:, :10], image[:10, 90:])


@pytest.mark.parametrize("mirror", [False, True])
def test_roi_input_mirrors_left_knees(mirror: bool) -> None:
    image = np.zeros((200, 200), np.float32)
    image[:, :100] = 1.0  # bright on the viewer's left
    model_input = roi_input(image, RoiBox(50, 50, 100), 32, mirror=mirror)
    left, right = model_input.pixels[:, :16].mean(), model_input.pixels[:, 16:].mean()
    assert model_input.flipped is mirror
    assert bool(left < right) is mirror
    assert model_input.pixels.shape == (32, 32)
    assert model_input.pixels.min() >= 0.0 and model_input.pixels.max() <= 1.0
