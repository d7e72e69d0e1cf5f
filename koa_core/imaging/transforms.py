"""Pure, deterministic array transforms that turn a decoded radiograph into model input.

The pipeline (``PREPROCESS_VERSION`` names it; bump it whenever any output can change):

1. ``to_right_orientation``: mirror left knees so every knee is seen as a right knee
   (the flag is returned so outputs can be mapped back to the original image).
2. ``centre_crop``: a square of ``FIELD_MM`` millimetres around the image centre when the
   pixel spacing is known (the joint sits in the middle of a PA knee view, and a fixed
   physical field makes the joint space the same number of pixels at every site), else the
   central square of the shorter side.
3. ``resize``: antialiased bilinear resize to the model's input size.
4. ``clip_to_percentiles``: clip to the 0.5th-99.5th intensity percentiles of the resized
   field, found from a histogram (one pass, no sort), and scale to [0, 1]. This removes
   collimator edges, burned-in markers and exposure differences between sites.

Version 2 resizes before it clips: the window is then found on ~50 thousand pixels instead
of a few million, which made preprocessing ~4x cheaper (it was the largest per-image cost
of a nightly run). Steps 1 and 2 are views, so only the field is ever copied.

Version 3 cuts knees, not image centres: whole films go through the localizer and each knee's
``roi_mm`` square (``koa_core.imaging.roi``) is resized and windowed as in steps 3-4; a file
that is already a knee ROI uses its central ``roi_mm`` (140 mm, DeepKnee's field, was 150).

Normalisation by the model's mean/std happens at scoring time (``model.inference``), because
those numbers belong to the model card, not to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

PREPROCESS_VERSION = "3"
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
HISTOGRAM_BINS = 4096
FIELD_MM = 150.0
ROI_MM = 140.0
"""Side of the square the grader sees around a localized joint (DeepKnee's/KNEEL's field)."""
# Relative range below which an image counts as flat (a few float32 epsilons per bin).
FLAT_TOLERANCE = 4 * HISTOGRAM_BINS * float(np.finfo(np.float32).eps)

FloatImage = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelInput:
    """One preprocessed image: ``pixels`` is float32 (size, size) in [0, 1]."""

    pixels: FloatImage
    flipped: bool


def block_mean(tensor: torch.Tensor, block: int, rows: int, columns: int) -> torch.Tensor:
    """The mean of each ``block x block`` tile of the top-left ``rows x columns`` of a 2-D
    contiguous tensor (both multiples of ``block``)."""
    # The sum of ``block`` strided slices, rows then columns: each pass is one vectorised
    # add over whole rows. Reducing a (.., block) axis instead walks a short inner axis:
    # on a 2,900 px film (one thread, AMD EPYC) this took 4.0 against 12.2 ms at the
    # overlay's 3 px blocks, 2.8 against 3.5 at the localizer's 10 (best of 30 runs), and
    # avg_pool2d's (block x block) windows were slower than either.
    row_sums = tensor[0:rows:block].clone()
    for offset in range(1, block):
        row_sums += tensor[offset:rows:block]
    sums = row_sums[:, 0:columns:block].clone()
    for offset in range(1, block):
        sums += row_sums[:, offset:columns:block]
    return sums / (block * block)


def histogram_percentiles(
    image: npt.NDArray[np.generic], percentiles: tuple[float, ...], bins: int = HISTOGRAM_BINS
) -> tuple[float, ...]:
    """Percentiles of ``image`` from a fixed-bin histogram, accurate to one bin width.

    A histogram is one linear pass; ``np.percentile`` sorts (about twice as slow on a
    2048 px image) and ``torch.quantile`` is slower still.
    """
    values = np.asarray(image, dtype=np.float32).ravel()
    low, high = float(values.min()), float(values.max())
    # A flat image that went through resampling varies by float rounding only: too narrow a
    # range for ``bins`` distinct float32 edges (np.histogram raises), and no contrast anyway.
    if high - low <= FLAT_TOLERANCE * max(abs(low), abs(high), 1.0):
        return tuple(low for _ in percentiles)
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    cumulative = np.cumsum(counts, dtype=np.float64) / values.size
    results = []
    for percentile in percentiles:
        index = int(np.searchsorted(cumulative, percentile / 100.0, side="left"))
        results.append(float(edges[min(index + 1, bins)]))
    return tuple(results)


def clip_to_percentiles(
    image: npt.NDArray[np.generic],
    low: float = LOW_PERCENTILE,
    high: float = HIGH_PERCENTILE,
) -> FloatImage:
    """Clip to the ``low``-``high`` percentile window and scale it to [0, 1]."""
    low_value, high_value = histogram_percentiles(image, (low, high))
    scaled = np.asarray(image, dtype=np.float32) - np.float32(low_value)
    span = high_value - low_value
    if span <= 0:
        return np.zeros_like(scaled)
    scaled *= np.float32(1.0 / span)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def to_right_orientation(
    image: npt.NDArray[np.generic], laterality: str | None
) -> tuple[npt.NDArray[np.generic], bool]:
    """Mirror a left knee left-right so it looks like a right knee; return (view, flipped)."""
    if laterality == "L":
        return image[:, ::-1], True
    return image, False


def centre_crop(
    image: npt.NDArray[np.generic], spacing_mm: float | None = None, field_mm: float = FIELD_MM
) -> npt.NDArray[np.generic]:
    """The central square of ``field_mm`` (given the pixel spacing), or of the shorter side."""
    rows, columns = image.shape
    side = min(rows, columns)
    if spacing_mm is not None and spacing_mm > 0:
        side = min(side, max(1, round(field_mm / spacing_mm)))
    top, left = (rows - side) // 2, (columns - side) // 2
    return image[top : top + side, left : left + side]


def resize(image: npt.NDArray[np.generic], size: int) -> FloatImage:
    """Antialiased bilinear resize to ``size`` x ``size``, as float32.

    The antialiasing filter's weights are all positive, so the output stays within the
    input's range: no clamp is needed.
    """
    pixels = np.ascontiguousarray(image, dtype=np.float32)
    if pixels.shape == (size, size):
        return pixels
    tensor = torch.from_numpy(pixels)[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True)
    return resized[0, 0].numpy()


def preprocess(
    pixels: npt.NDArray[np.generic],
    laterality: str | None,
    size: int,
    spacing_mm: float | None = None,
) -> ModelInput:
    """Run the whole pipeline on decoded pixels (bone bright) of one radiograph.

    Args:
        pixels: 2-D decoded image, modality LUT applied, bone bright.
        laterality: ``"L"``, ``"R"`` or ``None`` (unknown: left as it is).
        size: model input side in pixels.
        spacing_mm: pixel spacing of ``pixels`` as decoded (multiply the file's spacing by
            the decode scale for a reduced-resolution decode); ``None`` when unknown.
    """
    oriented, flipped = to_right_orientation(np.asarray(pixels), laterality)
    field = resize(centre_crop(oriented, spacing_mm), size)
    return ModelInput(pixels=clip_to_percentiles(field), flipped=flipped)
