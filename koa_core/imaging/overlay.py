"""The overlay picture of one film: windowed film, each knee's box, heatmap and result text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageDraw, ImageFont

from koa_core.errors import OverlayError
from koa_core.imaging.transforms import (
    HIGH_PERCENTILE,
    LOW_PERCENTILE,
    block_mean,
    histogram_percentiles,
)

MAX_SIDE = 1024
"""Films are downscaled so their longest side is at most this (viewers and PACS thumbnails)."""
SAMPLED_ABOVE = 512 * 512
ALPHA = 0.4
BOX_RGB = (0, 255, 0)
TEXT_RGB = (255, 255, 255)
LABEL_RGB = (0, 0, 0)
COLORMAP = "inferno"

Box = tuple[int, int, int, int]
ByteRGB = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class OverlayKnee:
    """One knee to draw.

    Attributes:
        side: ``"R"`` or ``"L"``.
        box: (row0, row1, col0, col1) of the knee's ROI in film pixels, end exclusive.
        heatmap: float (h, w) in [0, 1] over the box, in film orientation (a left knee's
            map already mirrored back from the model's right-knee view); resized to the box.
        kl_grade: the predicted KL grade.
        p_koa: P(KL >= 2).
        grade_set: the conformal prediction set.
    """

    side: str
    box: Box
    heatmap: npt.NDArray[np.float32]
    kl_grade: int
    p_koa: float
    grade_set: tuple[int, ...]


def knee_label(knee: OverlayKnee) -> str:
    """The text drawn for a knee, e.g. ``R  KL2  P(KOA) 0.83  set {1,2}``."""
    grades = ",".join(str(grade) for grade in knee.grade_set)
    return f"{knee.side}  KL{knee.kl_grade}  P(KOA) {knee.p_koa:.2f}  set {{{grades}}}"


@lru_cache(maxsize=1)
def colormap_lut() -> npt.NDArray[np.uint8]:
    """(256, 3) uint8 RGB of matplotlib's perceptually uniform ``inferno`` colormap."""
    from matplotlib import colormaps  # lazy: only the overlay needs it

    rgba = colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))
    return np.asarray(np.round(rgba[:, :3] * 255), dtype=np.uint8)


def window_film(film: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """8-bit grey of a bone-bright film, clipped to its 0.5th-99.5th percentiles.

    On a picture of over ``SAMPLED_ABOVE`` pixels the percentiles are those of every other
    row and column: on a shrunk 0.15 mm film (953 x 951) they moved by 0.6 of a
    3,300-level range, a fifth of one output grey level, and took 3.8 instead of 12 ms
    (AMD EPYC, AVX2). The scaling runs in place, in grey levels.
    """
    values = np.asarray(film, dtype=np.float32)
    if values.ndim != 2 or values.size == 0:
        raise OverlayError(f"the film must be one 2-D image; got shape {values.shape}")
    sample = values[::2, ::2] if values.size > SAMPLED_ABOVE else values
    low, high = histogram_percentiles(sample, (LOW_PERCENTILE, HIGH_PERCENTILE))
    levels = np.subtract(values, np.float32(low))
    np.multiply(levels, np.float32(255.0 / max(high - low, 1e-30)), out=levels)
    np.clip(levels, 0.0, 255.0, out=levels)
    return np.rint(levels, out=levels).astype(np.uint8)


def shrink_factor(shape: tuple[int, int], max_side: int = MAX_SIDE) -> int:
    """The whole number of film pixels per picture pixel that brings the longest side of
    ``shape`` to at most ``max_side``: 1 for films that fit."""
    return max(1, -(-max(shape) // max_side))


def shrink_film(film: npt.ArrayLike, max_side: int = MAX_SIDE) -> npt.NDArray[np.float32]:
    """The film as float32, block-averaged so its longest side is at most ``max_side``.

    Shrinking comes before windowing: the percentiles of a 1 Mpx picture are those of the
    8 Mpx film to well under a grey level, at an eighth of the cost (a 0.15 mm bilateral
    film windowed whole took ~250 ms of a night's ~300 ms per delivered film). A whole-number
    block mean reads each pixel once and cannot alias; Pillow's BOX resize to exactly
    ``max_side`` took 33 ms on such a film, the block mean ~4 (AMD EPYC, one thread). The
    last ``< factor`` rows and columns, well under a millimetre, are left out.
    """
    values = np.ascontiguousarray(film, dtype=np.float32)
    if values.ndim != 2 or values.size == 0:
        raise OverlayError(f"the film must be one 2-D image; got shape {values.shape}")
    factor = shrink_factor((values.shape[0], values.shape[1]), max_side)
    if factor == 1:
        return values
    rows, columns = values.shape[0] // factor * factor, values.shape[1] // factor * factor
    return block_mean(torch.from_numpy(values), factor, rows, columns).numpy()


def scaled_box(box: Box, scale: float, shape: tuple[int, int]) -> Box:
    """A film-pixel box in picture pixels, clipped to the picture and at least 1 px a side."""
    row0, row1, col0, col1 = (round(value * scale) for value in box)
    row0, col0 = min(max(row0, 0), shape[0] - 1), min(max(col0, 0), shape[1] - 1)
    return row0, max(min(row1, shape[0]), row0 + 1), col0, max(min(col1, shape[1]), col0 + 1)


def label_height(shape: tuple[int, int]) -> int:
    """Height in picture pixels of the text band drawn above each box."""
    return max(14, round(max(shape) / 48))


def _blend_heatmap(
    picture: ByteRGB, grey: npt.NDArray[np.uint8], heatmap: npt.NDArray[np.float32], box: Box
) -> None:
    """The heatmap blended onto the film's grey in ``box`` of ``picture`` (where two boxes
    overlap, the later knee's map is the one shown)."""
    row0, row1, col0, col1 = box
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise OverlayError(f"a heatmap must be 2-D (h, w); got shape {heat.shape}")
    resized = Image.fromarray(heat).resize((col1 - col0, row1 - row0), Image.Resampling.BILINEAR)
    heat_levels = np.rint(np.clip(np.asarray(resized), 0.0, 1.0) * 255).astype(np.intp)
    pairs = grey[row0:row1, col0:col1].astype(np.intp) * 256 + heat_levels
    picture[row0:row1, col0:col1] = np.take(blend_table(), pairs, axis=0)


@lru_cache(maxsize=1)
def blend_table() -> npt.NDArray[np.uint8]:
    """(256 x 256, 3) uint8: row ``256 * grey + heat`` is that grey level blended at
    ``ALPHA`` with the colormap's colour of that heat level. One lookup per pixel instead
    of float arithmetic on the box's three channels: 1.5-2.0 against 9.8-10.6 ms for the
    311 px box of a 0.15 mm film's knee (medians of 30, two runs each, AMD EPYC, AVX2)."""
    grey_levels = np.arange(256, dtype=np.float32)[:, None, None]
    colours = colormap_lut().astype(np.float32)[None, :, :]
    blended = np.rint((1.0 - ALPHA) * grey_levels + ALPHA * colours).astype(np.uint8)
    return blended.reshape(256 * 256, 3)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at ``size`` px; loading it costs more than drawing with it."""
    return ImageFont.load_default(size=size)


def _draw_label(draw: ImageDraw.ImageDraw, text: str, box: Box, height: int) -> None:
    """White text on a black band just above the box (inside its top edge near the border)."""
    row0, _, col0, _ = box
    font = _font(max(8, height - 4))
    top = row0 - height if row0 >= height else row0
    width = round(draw.textlength(text, font=font)) + 4
    draw.rectangle((col0, top, col0 + width - 1, top + height - 1), fill=LABEL_RGB)
    draw.text((col0 + 2, top + 1), text, fill=TEXT_RGB, font=font)


@dataclass(frozen=True)
class FilmPicture:
    """A film as the overlay draws on it: windowed 8-bit grey, at most ``MAX_SIDE`` a side.

    Attributes:
        grey: (H', W') uint8.
        scale: picture pixels per pixel of the film the knees' boxes are given in.
    """

    grey: npt.NDArray[np.uint8]
    scale: float


def film_picture(film: npt.ArrayLike, max_side: int = MAX_SIDE) -> FilmPicture:
    """The film shrunk (``shrink_film``) and windowed (``window_film``) for drawing on.

    Raises:
        OverlayError: the film is not 2-D.
    """
    grey = window_film(shrink_film(film, max_side))
    factor = shrink_factor((np.shape(film)[0], np.shape(film)[1]), max_side)
    return FilmPicture(grey, 1.0 / factor)


def render_overlay(
    film: npt.ArrayLike, knees: Sequence[OverlayKnee], *, max_side: int = MAX_SIDE
) -> ByteRGB:
    """The overlay picture of one film, RGB uint8 (H', W', 3): ``draw_overlay`` on its
    ``film_picture``.

    Args:
        film: (H, W) bone-bright pixels, any range (as the reader returns them).
        knees: the knees to draw, boxes in film pixels.
        max_side: the longest side of the picture.

    Raises:
        OverlayError: the film is not 2-D, or a heatmap is not 2-D.
    """
    return draw_overlay(film_picture(film, max_side), knees)


def draw_overlay(picture: FilmPicture, knees: Sequence[OverlayKnee]) -> ByteRGB:
    """Each knee drawn on the film's picture, RGB uint8.

    Inside each knee's box its heatmap is blended at ``ALPHA`` in the ``inferno``
    colormap, the box is outlined in green, and above it a black band holds the side, KL
    grade, P(KOA) and prediction set (``knee_label``).

    Raises:
        OverlayError: a heatmap is not 2-D.
    """
    rgb = np.repeat(picture.grey[:, :, None], 3, axis=2)
    shape = (rgb.shape[0], rgb.shape[1])
    boxes = [scaled_box(knee.box, picture.scale, shape) for knee in knees]
    for knee, box in zip(knees, boxes, strict=True):
        _blend_heatmap(rgb, picture.grey, knee.heatmap, box)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(shape) / 400))
    for knee, box in zip(knees, boxes, strict=True):
        row0, row1, col0, col1 = box
        draw.rectangle((col0, row0, col1 - 1, row1 - 1), outline=BOX_RGB, width=width)
        _draw_label(draw, knee_label(knee), box, label_height(shape))
    return np.asarray(image, dtype=np.uint8)
