"""The one path from a file to model input: decode, orient, crop, resize, window, 8-bit.

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

from koa_core.config import Settings
from koa_core.imaging.transforms import preprocess
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


def load_model_input(
    path: Path, input_size: int, *, settings: Settings | None = None
) -> FileModelInput:
    """Decode ``path`` and turn it into the grader's input.

    JPEG 2000 DICOMs are decoded at the lowest resolution level still covering the field
    (``Radiograph.decode_scale``), so the pixel spacing used for the crop is the file's
    spacing times that scale.

    Raises:
        ImageReadError: a subclass naming why the file cannot be used.
    """
    radiograph = read_radiograph(path, target_size=input_size, settings=settings)
    meta = radiograph.meta
    spacing = meta.pixel_spacing_mm
    spacing_mm = spacing[0] * radiograph.decode_scale if spacing else None
    model_input = preprocess(radiograph.pixels, meta.laterality, input_size, spacing_mm)
    return FileModelInput(to_uint8(model_input.pixels), model_input.flipped, meta)
