"""A knee's region of interest: a square of ``roi_mm`` centred on its joint, as model input.

The grader sees every knee the same way whatever the film: a fixed physical field around
the joint centre (so the joint space spans the same number of pixels at every site),
mirrored for left knees (every knee is seen as a right knee), resized, then windowed on its
own percentiles, exactly as ``koa_core.imaging.transforms.preprocess`` does for a whole
image. Parts of the square beyond the film's edge are filled with the darkest value inside
it (unexposed air), and their share is reported so a truncated knee can be refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from koa_core.imaging.transforms import ModelInput, clip_to_percentiles, resize


@dataclass(frozen=True)
class RoiBox:
    """A square of ``side`` pixels whose top-left pixel is (``top``, ``left``); it may reach
    beyond the image (negative or past its last row/column)."""

    top: int
    left: int
    side: int

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(row start, row stop, column start, column stop), unclipped."""
        return self.top, self.top + self.side, self.left, self.left + self.side

    def scaled(self, factor: float) -> tuple[float, float, float, float]:
        """``bounds`` in the pixels of an image ``factor`` times larger (e.g. the stored one)."""
        return tuple(float(value) * factor for value in self.bounds)  # type: ignore[return-value]


def roi_box(centre_x: float, centre_y: float, spacing_mm: float, roi_mm: float) -> RoiBox:
    """The ``roi_mm`` square centred on (``centre_x``, ``centre_y``), in pixels of that spacing."""
    side = max(1, round(roi_mm / spacing_mm))
    return RoiBox(
        math.floor(centre_y - side / 2 + 0.5), math.floor(centre_x - side / 2 + 0.5), side
    )


def off_film_share(box: RoiBox, shape: tuple[int, int]) -> float:
    """Share of the box's area outside an image of ``shape`` (0 when wholly inside)."""
    top, bottom, left, right = box.bounds
    rows = max(0, min(bottom, shape[0]) - max(top, 0))
    columns = max(0, min(right, shape[1]) - max(left, 0))
    return 1.0 - rows * columns / box.side**2


def crop_roi(image: npt.NDArray[np.generic], box: RoiBox) -> npt.NDArray[np.float32]:
    """The box's pixels as float32, off-film parts filled with the darkest value on the film."""
    top, bottom, left, right = box.bounds
    rows, columns = image.shape
    inside = np.asarray(
        image[max(top, 0) : min(bottom, rows), max(left, 0) : min(right, columns)],
        dtype=np.float32,
    )
    if inside.shape == (box.side, box.side):
        return inside
    fill = float(inside.min()) if inside.size else 0.0
    field = np.full((box.side, box.side), fill, dtype=np.float32)
    if inside.size:
        row, column = max(top, 0) - top, max(left, 0) - left
        field[row : row + inside.shape[0], column : column + inside.shape[1]] = inside
    return field


def roi_input(
    image: npt.NDArray[np.generic], box: RoiBox, size: int, *, mirror: bool
) -> ModelInput:
    """The grader's input for one knee: crop, mirror (left knees), resize, window to [0, 1]."""
    field = crop_roi(image, box)
    if mirror:
        field = field[:, ::-1]
    return ModelInput(pixels=clip_to_percentiles(resize(field, size)), flipped=mirror)
