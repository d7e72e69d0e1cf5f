"""Knee ROI files to model input: mirrored once, rounded as stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from koa_core.io.model_input import load_model_input, to_uint8
from koa_core.phantom import render_knee
from koa_core.phantom.writers import save_field_png

SIZE = 64


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_left_knees_are_mirrored_once(tmp_path: Path, laterality: str) -> None:
    image = render_knee(3, laterality, 5, rows=420, columns=400, spacing_mm=0.4)
    path = tmp_path / f"knee_{laterality}.png"
    save_field_png(image, path)
    model_input = load_model_input(path, SIZE)
    assert model_input.flipped == (laterality == "L")
    assert model_input.pixels.shape == (SIZE, SIZE) and model_input.pixels.dtype == np.uint8


def test_to_uint8_rounds_to_nearest_level() -> None:
    levels = to_uint8(np.array([0.0, 0.5 / 255, 0.51 / 255, 1.0], dtype=np.float32))
    assert levels.tolist() == [0, 0, 1, 255]
