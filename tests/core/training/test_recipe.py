"""Tests for the default recipe: determinism, the weights it keeps, its loss options."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from koa_core.data.datasets import KLDataset, load_dataset
from koa_core.model.checkpoint import load_model, load_torch
from koa_core.training.config import TrainConfig
from koa_core.training.loop import EpochStats, train
from koa_core.training.loss import adjacent_targets, kl_loss
from tests.core.kl_fixtures import write_image_folder

# The default recipe, shrunk only in what makes it slow: input size, epochs, threads.
RECIPE = replace(TrainConfig(), epochs=1, input_size=64, batch_size=8, device="cpu", threads=1)


class Interrupted(Exception):
    """Stands in for a crash between epochs."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> KLDataset:
    root = write_image_folder(tmp_path_factory.mktemp("kl"), {"train": 3, "val": 2})
    return load_dataset(root, RECIPE.input_size)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_torch(path)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_default_is_the_fixed_schedule_recipe() -> None:
    config = TrainConfig()
    assert (config.architecture, config.depth, config.width) == ("plain", (2, 2, 2, 2), 16)
    assert (config.input_size, config.epochs, config.lr, config.loss) == (128, 16, 3e-3, "ce")
    assert config.drop_rate == 0.0 and config.adjacent_smoothing == 0.0
    assert config.reader_noise == 0.1 and config.card().architecture.reader_noise == 0.1
    assert config.patience is None and config.keep == "last"
    assert not config.class_weighted and not config.amp and not config.augment


def test_the_same_seed_gives_the_same_weights(data: KLDataset, tmp_path: Path) -> None:
    first = train(RECIPE, data, tmp_path / "a")
    second = train(RECIPE, data, tmp_path / "b")
    other = train(replace(RECIPE, seed=1), data, tmp_path / "c")
    assert _same(_weights(first.weights_path), _weights(second.weights_path))
    assert not _same(_weights(first.weights_path), _weights(other.weights_path))


def test_the_trained_card_rebuilds_the_reader_noise_layer(data: KLDataset, tmp_path: Path) -> None:
    result = train(RECIPE, data, tmp_path)
    model = load_model(result.weights_path, result.card)
    assert result.card.architecture.reader_noise == 0.1
    with torch.no_grad():
        recorded = model(torch.zeros(2, 1, RECIPE.input_size, RECIPE.input_size)).exp()
    # The mixing moves 10 % off every grade, so no output can be surer than 0.9.
    assert torch.allclose(recorded.sum(dim=1), torch.ones(2), atol=1e-6)
    assert float(recorded.max()) <= 0.9 + 1e-6


def test_last_weights_are_the_final_epochs(data: KLDataset, tmp_path: Path) -> None:
    result = train(replace(RECIPE, epochs=2), data, tmp_path)
    final = load_torch(result.checkpoint_path)["model"]
    assert _same(_weights(result.weights_path), final)
    assert not result.stopped_early and len(result.history) == 2


def test_ema_weights_resume_exactly(data: KLDataset, tmp_path: Path) -> None:
    config = replace(RECIPE, epochs=2, keep="ema")
    straight = train(config, data, tmp_path / "straight")
    # The average lags the model, so it is not the final weights.
    final = load_torch(straight.checkpoint_path)["model"]
    assert not _same(_weights(straight.weights_path), final)

    def stop_after_one(stats: EpochStats) -> None:
        if stats.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, data, tmp_path / "resumed", progress=stop_after_one)
    resumed = train(config, data, tmp_path / "resumed", resume=True)
    assert _same(_weights(straight.weights_path), _weights(resumed.weights_path))


def test_unweighted_smoothed_loss_is_torch_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.5, 0.0, -1.0, 0.0], [0.0, 0.0, 3.0, 0.0, 0.0]])
    targets = torch.tensor([0, 3])
    config = replace(RECIPE, label_smoothing=0.1)
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert torch.isclose(kl_loss(logits, targets, torch.ones(5), config), expected)
    assert not torch.isclose(kl_loss(logits, targets, torch.ones(5), RECIPE), expected)


def test_adjacent_smoothing_puts_the_share_on_the_neighbouring_grades() -> None:
    targets = torch.tensor([0, 2, 4])
    soft = adjacent_targets(targets, 0.2)
    expected = [[0.8, 0.2, 0, 0, 0], [0, 0.1, 0.8, 0.1, 0], [0, 0, 0, 0.2, 0.8]]
    assert torch.allclose(soft, torch.tensor(expected))
    # The loss is least where the softmax is that distribution, not the one-hot label.
    config = replace(RECIPE, adjacent_smoothing=0.2)
    logits = soft.clamp(min=1e-6).log().requires_grad_()
    kl_loss(logits, targets, torch.ones(5), config).backward()
    assert logits.grad is not None and logits.grad.abs().max() < 1e-5
    plain = soft.clamp(min=1e-6).log().requires_grad_()
    kl_loss(plain, targets, torch.ones(5), RECIPE).backward()
    assert plain.grad is not None and plain.grad.abs().max() > 0.05


def test_config_refuses_nonsense_recipe_fields() -> None:
    with pytest.raises(ValueError, match="keep"):
        replace(RECIPE, keep="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label_smoothing"):
        replace(RECIPE, label_smoothing=1.0)
    with pytest.raises(ValueError, match="adjacent_smoothing"):
        replace(RECIPE, adjacent_smoothing=-0.1)
    with pytest.raises(ValueError, match="reader_noise"):
        replace(RECIPE, reader_noise=0.5)
    with pytest.raises(ValueError, match="patience"):
        replace(RECIPE, patience=0)
