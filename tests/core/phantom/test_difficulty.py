"""Tests for the phantoms' difficulty knob: default bytes unchanged, harder sets harder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from koa_core.phantom import DIFFICULTIES, Difficulty, difficulty_named, render_knee
from koa_core.phantom.writers import write_kl_folders

SMALL = {"rows": 96, "columns": 96, "spacing_mm": 1.6, "marker": False}


@pytest.mark.parametrize("grade", range(5))
def test_the_default_difficulty_renders_the_same_knee(grade: int) -> None:
    plain = render_knee(grade, "R", 11, **SMALL)
    default = render_knee(grade, "R", 11, difficulty=Difficulty(), **SMALL)
    assert np.array_equal(plain.pixels, default.pixels)
    assert plain.features == default.features


@pytest.mark.parametrize("name", ["hard", "harder"])
def test_harder_sets_show_subtler_signs_and_more_noise(name: str) -> None:
    easy = render_knee(4, "R", 5, **SMALL)
    hard = render_knee(4, "R", 5, difficulty=DIFFICULTIES[name], **SMALL)
    anatomy = easy.anatomy
    assert hard.anatomy == anatomy
    # Less narrowing, shorter spurs, less sclerosis and varus: closer to a healthy knee.
    assert easy.features.jsw_medial_mm < hard.features.jsw_medial_mm < anatomy.jsw_medial_mm
    assert hard.features.osteophyte_mm[0] < easy.features.osteophyte_mm[0]
    assert hard.features.sclerosis < easy.features.sclerosis
    assert hard.acquisition.noise > easy.acquisition.noise
    assert hard.acquisition.blur_mm > easy.acquisition.blur_mm


def test_difficulties_increase() -> None:
    normal, hard, harder = (DIFFICULTIES[n] for n in ("normal", "hard", "harder"))
    assert normal.sign_scale > hard.sign_scale > harder.sign_scale
    assert normal.noise_scale < hard.noise_scale < harder.noise_scale
    assert 0.10 <= hard.label_noise < harder.label_noise <= 0.15


def test_a_difficulty_brings_its_label_noise_to_every_split(tmp_path: Path) -> None:
    records = write_kl_folders(tmp_path, 12, 3, difficulty=Difficulty(label_noise=1.0))
    assert {r.split for r in records} == {"train", "val", "test"}
    assert all(abs(r.grade - r.true_grade) == 1 for r in records if r.grade is not None)
    with (tmp_path / "labels.csv").open() as handle:
        assert "true_kl_grade" in next(csv.reader(handle))


def test_unknown_difficulty_is_refused() -> None:
    assert difficulty_named(None) == Difficulty()
    assert difficulty_named("hard") is DIFFICULTIES["hard"]
    with pytest.raises(ValueError, match="difficulty"):
        difficulty_named("impossible")
