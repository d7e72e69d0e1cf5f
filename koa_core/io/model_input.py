"""From a knee ROI file to model input: decode, orient, crop, resize, window, 8-bit.

Training datasets, the nightly prepare step, ``koa preview`` and ``koa inspect`` all call
``load_model_input``, so the grader never sees an image made another way than the ones it
was trained on. The 8-bit form is what is stored and fed: the public KL datasets and koa's
training caches are 8-bit, and a quarter of float32's memory per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from koa_core.config import Settings, get_settings
from koa_core.imaging.roi import RoiBox, roi_input
from koa_core.io.reader import read_radiograph
from koa_core.io.record import ImageMetadata

ByteImage = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FileModelInput:
    """One file's model input: ``pixels`` uint8 (size, size), and what was done to get it."""

    pixels: ByteImage
    flipped: bool
    meta: ImageMetadata


def to_uint8(pixels: npt.NDArray[np.float32]) -> ByteImage:
    """[0, 1] floats to 8-bit grey levels, rounding to nearest (in float32, as stored)."""
    return np.round(pixels * np.float32(255.0)).astype(np.uint8)


def roi_file_spacing_mm(meta: ImageMetadata, decode_scale: int) -> float | None:
    """Spacing of the decoded pixels (the header's times the decode scale), None if unknown."""
    spacing = meta.pixel_spacing_mm
    return spacing[0] * decode_scale if spacing else None


def load_model_input(
    path: Path, input_size: int, *, settings: Settings | None = None
) -> FileModelInput:
    """Decode ``path``, a file that holds one knee's ROI, and turn it into the grader's input.

    The knee is taken to sit at the centre: its ``roi_mm`` square is used when the pixel
    spacing is known (the whole shorter side when that is smaller), else the central square
    of the shorter side, as the public KL datasets' crops are meant. Whole films go through
    ``koa_core.localize.knee_inputs.load_knee_inputs`` instead, which cuts the same square
    around each joint the localizer finds. JPEG 2000 DICOMs are decoded at the lowest
    resolution level still covering the field (``Radiograph.decode_scale``).

    Raises:
        ImageReadError: a subclass naming why the file cannot be used.
    """
    settings = settings or get_settings()
    radiograph = read_radiograph(path, target_size=input_size, settings=settings)
    meta, pixels = radiograph.meta, radiograph.pixels
    spacing_mm = roi_file_spacing_mm(meta, radiograph.decode_scale)
    shorter = min(pixels.shape)
    side = (
        shorter if spacing_mm is None else min(shorter, max(1, round(settings.roi_mm / spacing_mm)))
    )
    box = RoiBox((pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2, side)
    model_input = roi_input(pixels, box, input_size, mirror=meta.laterality == "L")
    return FileModelInput(to_uint8(model_input.pixels), model_input.flipped, meta)
