"""The film -> network input path, the card's JSON, and the augmentation's guarantees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from koa_core.errors import CorruptCheckpointError
from koa_core.imaging.transforms import block_mean
from koa_core.localize.augment import DROP_MARGIN_MM, KEEP_MARGIN_MM, WorkFilm, augment_sample
from koa_core.localize.card import LocalizerCard, read_localizer_card
from koa_core.localize.film_input import network_tensor, prepare_film, resample
from koa_core.localize.train_config import LocalizerTrainConfig


def test_the_card_round_trips_through_json(tmp_path: Path) -> None:
    config = LocalizerTrainConfig(widths=(8, 16, 24, 32, 48), epochs=3)
    card = LocalizerCard(
        architecture=config.architecture(),
        metrics={"validation": {"median_error_mm": 1.0}},
        hyperparameters=config.to_dict(),
        data_fingerprint="f" * 64,
    )
    (tmp_path / "card.json").write_text(json.dumps({"card": card.to_dict()}))
    assert read_localizer_card(tmp_path / "card.json") == card
    assert LocalizerTrainConfig.from_dict(dict(card.hyperparameters)) == config


def test_a_card_that_is_not_a_localizer_is_refused(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text(
        json.dumps({"card": {**LocalizerCard().to_dict(), "kind": "grader"}})
    )
    with pytest.raises(CorruptCheckpointError, match="not a localizer"):
        read_localizer_card(tmp_path / "card.json")


def test_a_film_is_resampled_to_the_cards_spacing_and_maps_back() -> None:
    image = np.random.default_rng(0).uniform(0, 100, (900, 600)).astype(np.float32)
    image[280:340, 430:490] = 1000.0  # a bright square centred at column 459.5, row 309.5
    film = prepare_film(image, 0.5, 3.0, LocalizerCard().normalisation)
    assert film.pixels.shape == (150, 100)
    assert film.pixels.min() >= 0.0 and film.pixels.max() <= 1.0
    rows, columns = np.nonzero(film.pixels >= 0.99)
    x, y = film.to_original(float(columns.mean()), float(rows.mean()))
    assert abs(x - 459.5) <= 1.0 and abs(y - 309.5) <= 1.0
    assert film.from_original(*film.to_original(12.25, 40.5)) == pytest.approx((12.25, 40.5))


def test_theblock_mean_is_torchs_average_pool_over_the_covered_film() -> None:
    # 1003 x 757 at 0.15 mm to 3 mm: blocks of 10, the last 3 rows and 7 columns left out.
    image = np.random.default_rng(1).uniform(0, 4095, (1003, 757)).astype(np.float32)
    tensor = torch.from_numpy(image)
    pooled = F.avg_pool2d(tensor[None, None], 10)[0, 0]
    assert torch.allclose(block_mean(tensor, 10, 1000, 750), pooled, rtol=1e-5)
    small, covered = resample(image, 0.15, 3.0)
    assert covered == (1000, 750) and small.shape == (50, 38)


def test_the_network_input_is_padded_to_the_stride() -> None:
    norm = LocalizerCard().normalisation
    tensor = network_tensor(np.ones((70, 33), np.float32), norm, 32)
    assert tensor.shape == (1, 1, 96, 64)
    assert float(tensor[0, 0, 0, 0]) == pytest.approx((1.0 - norm.mean) / norm.std)
    assert float(tensor[0, 0, -1, -1]) == pytest.approx((norm.pad_value - norm.mean) / norm.std)


def _work_film() -> WorkFilm:
    """Two 'knees' (a bright blob each, the right one with a 'fibula' on its left)."""
    rng = np.random.default_rng(1)
    pixels = rng.uniform(0.0, 0.2, (200, 260)).astype(np.float32)
    pixels[90:110, 60:80] = 1.0
    pixels[90:110, 180:200] = 1.0
    return WorkFilm(pixels, 2.0, ((70.0, 100.0, True), (190.0, 100.0, False)))


@pytest.mark.parametrize("hard", [False, True])
def test_augmentation_is_deterministic_in_its_generator(hard: bool) -> None:
    first = augment_sample(_work_film(), 128, 3.0, np.random.default_rng(5), hard=hard)
    again = augment_sample(_work_film(), 128, 3.0, np.random.default_rng(5), hard=hard)
    other = augment_sample(_work_film(), 128, 3.0, np.random.default_rng(6), hard=hard)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert not np.array_equal(first[0], other[0])


def test_a_flip_mirrors_the_handedness_and_knees_stay_inside() -> None:
    film = _work_film()
    seen = set()
    for seed in range(40):
        pixels, knees, side_joint = augment_sample(
            film, 128, 3.0, np.random.default_rng(seed), hard=True
        )
        assert side_joint is None
        assert pixels.shape == (128, 128) and pixels.min() >= 0.0 and pixels.max() <= 1.0
        margin = min(KEEP_MARGIN_MM, DROP_MARGIN_MM) / 3.0 / 2
        for knee in knees:
            assert margin <= knee.x <= 128 - margin and margin <= knee.y <= 128 - margin
        if len(knees) == 2:
            left, right = sorted(knees, key=lambda k: k.x)
            # Flipped or not, the knee on the viewer's left of a pair looks right.
            assert left.right_looking and not right.right_looking
            seen.add("pair")
        for knee in knees:
            seen.add(knee.right_looking)
    assert seen == {"pair", True, False}


def test_a_lateral_view_keeps_its_joint_in_view_and_is_never_collimated_away() -> None:
    pixels = np.random.default_rng(0).uniform(0.0, 0.2, (200, 260)).astype(np.float32)
    pixels[90:110, 180:200] = 1.0
    film = WorkFilm(pixels, 2.0, (), lateral=True, lateral_joint=(190.0, 100.0))
    margin = KEEP_MARGIN_MM / 3.0 / 2
    for seed in range(20):
        image, knees, joint = augment_sample(film, 128, 3.0, np.random.default_rng(seed), hard=True)
        assert knees == [] and joint is not None
        x, y = joint
        assert margin <= x <= 128 - margin and margin <= y <= 128 - margin
        # The joint's block stands out where the target says (dark when inverted).
        assert abs(image[round(y), round(x)] - np.median(image)) > 0.3
