"""Tests for the overlay picture: boxes, heatmaps only inside them, text above them, sides."""

from __future__ import annotations

import numpy as np
import pytest

from koa_core.errors import OverlayError
from koa_core.imaging.overlay import (
    ALPHA,
    BOX_RGB,
    OverlayKnee,
    colormap_lut,
    knee_label,
    label_height,
    render_overlay,
    shrink_film,
    window_film,
)


def film(rows: int = 600, columns: int = 800) -> np.ndarray:
    """A smooth bone-bright ramp in a 12-bit-like range (no pixel is an overlay colour)."""
    ramp = np.linspace(200.0, 3800.0, columns, dtype=np.float32)[None, :]
    return np.repeat(ramp, rows, axis=0) + np.linspace(0, 100, rows, dtype=np.float32)[:, None]


def knee(side: str, box: tuple[int, int, int, int], heatmap: np.ndarray) -> OverlayKnee:
    return OverlayKnee(side, box, heatmap, kl_grade=2, p_koa=0.8312, grade_set=(1, 2))


def left_hot(shape: tuple[int, int] = (50, 60)) -> np.ndarray:
    """A heatmap hot on its left (film-orientation) half, cold on the right."""
    heat = np.zeros(shape, dtype=np.float32)
    heat[:, : shape[1] // 2] = 1.0
    return heat


R_BOX, L_BOX = (200, 400, 100, 300), (220, 420, 450, 700)


def test_label_text_holds_side_grade_p_koa_and_the_set() -> None:
    assert knee_label(knee("L", R_BOX, left_hot())) == "L  KL2  P(KOA) 0.83  set {1,2}"


def test_boxes_heatmaps_and_text_are_where_they_belong() -> None:
    knees = [knee("R", R_BOX, left_hot()), knee("L", L_BOX, left_hot())]
    picture = render_overlay(film(), knees)
    assert picture.shape == (600, 800, 3) and picture.dtype == np.uint8
    grey = window_film(film())
    plain = np.repeat(grey[:, :, None], 3, axis=2)
    changed = (picture != plain).any(axis=2)
    band = label_height((600, 800))
    allowed = np.zeros_like(changed)
    for row0, row1, col0, col1 in (R_BOX, L_BOX):
        allowed[row0:row1, col0:col1] = True
        allowed[row0 - band : row0, col0 : col1 + 200] = True  # the text band above
        # The outline is the box's own border pixels.
        assert (picture[row0, col0 + 5 : col1 - 5] == BOX_RGB).all()
        assert (picture[row1 - 1, col0 + 5 : col1 - 5] == BOX_RGB).all()
        assert (picture[row0 + 5 : row1 - 5, col0] == BOX_RGB).all()
        assert (picture[row0 + 5 : row1 - 5, col1 - 1] == BOX_RGB).all()
        # White text drawn in the black band right above the box, and nowhere below it.
        label = picture[row0 - band : row0, col0 : col0 + 200]
        assert (label == 255).all(axis=2).sum() > 50 and (label == 0).all(axis=2).sum() > 500
    assert not (changed & ~allowed).any(), "something was drawn outside the boxes and labels"
    # The two labels differ (R vs L).
    first = picture[R_BOX[0] - band : R_BOX[0], R_BOX[2] : R_BOX[2] + 30]
    second = picture[L_BOX[0] - band : L_BOX[0], L_BOX[2] : L_BOX[2] + 30]
    assert (first != second).any()


@pytest.mark.parametrize("side", ["R", "L"])
def test_the_heatmap_is_blended_as_given_in_film_orientation(side: str) -> None:
    # A left knee's map arrives already mirrored back: the overlay must not flip it again.
    row0, row1, col0, col1 = R_BOX
    picture = render_overlay(film(), [knee(side, R_BOX, left_hot())])
    grey = window_film(film()).astype(np.float32)
    lut = colormap_lut().astype(np.float32)
    middle = (row0 + row1) // 2
    for column, level in ((col0 + 20, 255), (col1 - 20, 0)):
        expected = (1 - ALPHA) * grey[middle, column] + ALPHA * lut[level]
        np.testing.assert_allclose(picture[middle, column], expected, atol=1.0)


def test_big_films_are_downscaled_with_their_boxes() -> None:
    big = film(2400, 3000)
    box = (800, 1600, 400, 1200)
    picture = render_overlay(big, [knee("R", box, left_hot())])
    # Block means of 3 x 3 film pixels: the longest side at most 1024, the aspect kept.
    assert picture.shape == (800, 1000, 3)
    scale = 1 / 3
    row0, col0, col1 = round(800 * scale), round(400 * scale), round(1200 * scale)
    assert (picture[row0, col0 + 5 : col1 - 5] == BOX_RGB).all()


def test_a_shrunk_film_is_the_mean_of_each_block_of_film_pixels() -> None:
    big = np.random.default_rng(3).uniform(0, 4095, (2861, 2855)).astype(np.float32)
    small = shrink_film(big)
    assert small.shape == (953, 951)
    expected = big[:2859, :2853].reshape(953, 3, 951, 3).mean(axis=(1, 3))
    assert np.allclose(small, expected, rtol=1e-5)
    assert shrink_film(big[:1000, :1024]).shape == (1000, 1024)  # a film that fits


def test_a_film_without_knees_is_just_the_windowed_film() -> None:
    picture = render_overlay(film(), [])
    assert (picture == window_film(film())[:, :, None]).all()


@pytest.mark.parametrize(
    ("image", "heatmap"),
    [(np.zeros((2, 3, 4), np.float32), left_hot()), (film(), np.zeros(5, np.float32))],
    ids=["film-3d", "heatmap-1d"],
)
def test_unusable_inputs_are_overlay_errors(image: np.ndarray, heatmap: np.ndarray) -> None:
    with pytest.raises(OverlayError):
        render_overlay(image, [knee("R", R_BOX, heatmap)])
