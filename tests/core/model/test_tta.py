"""Tests for test-time augmentation: shifts and zooms only, averaged probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from koa_core.model.card import read_card
from koa_core.model.checkpoint import load_model
from koa_core.model.inference import predict_dataset
from koa_core.model.network import build_model
from koa_core.model.tta import TTA_VIEWS, tta_view
from koa_core.training.config import TrainConfig
from tests.core.kl_fixtures import constant_model


def _left_bright(n: int = 2, size: int = 64) -> torch.Tensor:
    images = torch.zeros(n, 1, size, size)
    images[..., : size // 3] = 1.0
    return images


def test_no_view_flips_the_knee() -> None:
    images = _left_bright()
    for view in TTA_VIEWS:
        out = tta_view(images, *view)
        left, right = out[..., :32].mean(), out[..., 32:].mean()
        assert left > right + 0.3, view


def test_views_move_the_image_and_the_identity_does_not() -> None:
    images = _left_bright()
    assert tta_view(images, 1.0, 0.0, 0.0) is images
    shifted = tta_view(images, 1.0, 0.04, 0.04)
    zoomed = tta_view(images, 1.05, 0.0, 0.0)
    assert not torch.equal(shifted, images) and not torch.equal(zoomed, images)
    assert shifted.shape == images.shape == zoomed.shape


def test_tta_averages_probabilities(tmp_path: Path) -> None:
    config = TrainConfig(input_size=64, depth=(1, 1), width=8)
    torch.manual_seed(0)
    model = build_model(config.card())
    images = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    plain = predict_dataset(model, config.card(), images, device="cpu", fast=False)
    tta = predict_dataset(model, config.card(), images, device="cpu", fast=False, tta=True)
    assert tta.shape == (3, 5)
    assert np.allclose(tta.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(plain, tta)
    # A model that ignores its input gives the same answer for every view.
    directory = constant_model(tmp_path, grade=2)
    card = read_card(directory / "card.json")
    useless = load_model(directory / "weights.pt", card)
    answers = predict_dataset(useless, card, images, device="cpu", tta=True)
    assert np.allclose(answers, predict_dataset(useless, card, images, device="cpu"), atol=1e-6)
