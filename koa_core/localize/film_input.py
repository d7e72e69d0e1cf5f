"""A whole film as localizer input: resampled to the card's spacing, windowed, padded.

The film is downsampled with an antialiased filter (a plain subsample would alias the
noise and thin edges into the heatmap), then clipped to its own intensity percentiles as
``koa_core.imaging.transforms.clip_to_percentiles`` does for the grader, so exposure and
processing differences between sites do not reach the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from koa_core.imaging.transforms import block_mean, clip_to_percentiles
from koa_core.localize.card import InputNormalisation

FloatImage = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Resampled:
    """A film at the localizer's spacing and the per-axis factor back to the original.

    ``pixels`` is the windowed film in [0, 1]; ``scale_x``/``scale_y`` are original pixels
    per resampled pixel; ``original_shape`` is the film's (rows, columns) as given.
    """

    pixels: FloatImage
    scale_x: float
    scale_y: float
    original_shape: tuple[int, int]

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A resampled pixel position (indices) in original pixel indices."""
        return (x + 0.5) * self.scale_x - 0.5, (y + 0.5) * self.scale_y - 0.5

    def from_original(self, x: float, y: float) -> tuple[float, float]:
        """An original pixel position (indices) in resampled pixel indices."""
        return (x + 0.5) / self.scale_x - 0.5, (y + 0.5) / self.scale_y - 0.5


def resample(
    image: npt.NDArray[np.generic], spacing_mm: float, mm_per_px: float
) -> tuple[FloatImage, tuple[int, int]]:
    """``image`` at ``mm_per_px`` (antialiased bilinear; never upsampled past 1:1 detail),
    and the (rows, columns) of ``image`` it covers.

    A big reduction is done in two steps: a ``k x k`` block mean to within a factor 2-4
    of the target, then the antialiased bilinear filter. The antialiased filter alone
    reads ~2x the reduction factor squared input pixels per output pixel (a 0.15 mm film
    taken to 3 mm/px: 20x, a fifth of a night's per-film time); the block mean reads each
    pixel once. The last ``< k`` rows and columns, under 2 mm of film, are left out, and
    the covered extent says so, so positions map back exactly.
    """
    pixels = np.ascontiguousarray(image, dtype=np.float32)
    rows, columns = pixels.shape
    size = (
        max(1, round(rows * spacing_mm / mm_per_px)),
        max(1, round(columns * spacing_mm / mm_per_px)),
    )
    if size == (rows, columns):
        return pixels, (rows, columns)
    tensor = torch.from_numpy(pixels)
    block = min(int(mm_per_px / spacing_mm // 2), rows, columns)
    if block >= 2:
        rows, columns = rows // block * block, columns // block * block
        tensor = block_mean(tensor, block, rows, columns)
    small = F.interpolate(tensor[None, None], size=size, mode="bilinear", antialias=True)
    return small[0, 0].numpy(), (rows, columns)


def prepare_film(
    image: npt.NDArray[np.generic], spacing_mm: float, mm_per_px: float, norm: InputNormalisation
) -> Resampled:
    """The film resampled to ``mm_per_px`` and windowed to [0, 1] by its percentiles.

    Raises:
        ValueError: ``image`` is not 2-D or ``spacing_mm`` is not positive.
    """
    if np.ndim(image) != 2:
        raise ValueError(f"a film must be a 2-D array, got shape {np.shape(image)}")
    if not spacing_mm > 0:
        raise ValueError(f"pixel spacing must be positive, got {spacing_mm}")
    small, (covered_rows, covered_columns) = resample(image, spacing_mm, mm_per_px)
    windowed = clip_to_percentiles(small, norm.low_percentile, norm.high_percentile)
    scale_x, scale_y = covered_columns / small.shape[1], covered_rows / small.shape[0]
    rows, columns = np.shape(image)
    return Resampled(windowed, scale_x, scale_y, (rows, columns))


def network_tensor(pixels: FloatImage, norm: InputNormalisation, multiple: int) -> torch.Tensor:
    """(1, 1, H, W) standardised input, padded right and bottom to a multiple of ``multiple``."""
    rows, columns = pixels.shape
    padded_rows, padded_columns = (
        -(-rows // multiple) * multiple,
        -(-columns // multiple) * multiple,
    )
    tensor = torch.full((1, 1, padded_rows, padded_columns), norm.pad_value, dtype=torch.float32)
    tensor[0, 0, :rows, :columns] = torch.from_numpy(pixels)
    return (tensor - norm.mean) / norm.std
