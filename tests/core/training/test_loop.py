"""Tests for the training loop: outputs, exact resume, refused checkpoints, early stopping, loss."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from koa_core.data.datasets import KLDataset, load_dataset
from koa_core.errors import CorruptCheckpointError
from koa_core.model.card import read_card
from koa_core.model.checkpoint import load_model, load_torch
from koa_core.training.augment import augment_batch
from koa_core.training.config import TrainConfig
from koa_core.training.loop import EpochStats, train
from koa_core.training.loss import class_weights, kl_loss
from tests.core.kl_fixtures import TINY_CONFIG as CONFIG
from tests.core.kl_fixtures import write_image_folder


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C between epochs."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> KLDataset:
    root = write_image_folder(tmp_path_factory.mktemp("kl"), {"train": 4, "val": 2})
    return load_dataset(root, CONFIG.input_size)


def test_training_writes_weights_card_and_checkpoint(dataset: KLDataset, tmp_path: Path) -> None:
    seen: list[EpochStats] = []
    config = replace(CONFIG, epochs=2, cache_dir=str(tmp_path / "cache"))
    result = train(config, dataset.root, tmp_path, progress=seen.append)
    assert result.fingerprint == dataset.fingerprint
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    assert [s.epoch for s in seen] == [1, 2]
    assert result.history == tuple(seen)
    assert result.best_epoch in (1, 2)
    document = json.loads(result.card_path.read_text())
    assert document["data"]["fingerprint"] == dataset.fingerprint
    assert document["hyperparameters"]["epochs"] == 2
    assert len(document["history"]) == 2
    card = read_card(result.card_path)
    assert card == result.card
    model = load_model(result.weights_path, card)
    best = load_torch(result.checkpoint_path)["model"] if result.best_epoch == 2 else None
    if best is not None:
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, best[name])


def test_resume_after_interrupt_matches_an_uninterrupted_run(
    dataset: KLDataset, tmp_path: Path
) -> None:
    straight = train(CONFIG, dataset, tmp_path / "straight")

    def interrupt_after_two(stats: EpochStats) -> None:
        if stats.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(CONFIG, dataset, tmp_path / "resumed", progress=interrupt_after_two)
    assert load_torch(tmp_path / "resumed" / "checkpoint.pt")["state"]["epoch"] == 2
    rerun: list[EpochStats] = []
    resumed = train(CONFIG, dataset, tmp_path / "resumed", resume=True, progress=rerun.append)
    assert [s.epoch for s in rerun] == [3, 4]  # it continued; it did not start again

    final_a = load_torch(straight.checkpoint_path)["model"]
    final_b = load_torch(resumed.checkpoint_path)["model"]
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    best_a, best_b = load_torch(straight.weights_path), load_torch(resumed.weights_path)
    assert all(torch.equal(best_a[name], best_b[name]) for name in best_a)
    assert [s.val_qwk for s in straight.history] == [s.val_qwk for s in resumed.history]


def test_truncated_checkpoint_is_never_loaded(dataset: KLDataset, tmp_path: Path) -> None:
    train(replace(CONFIG, epochs=1), dataset, tmp_path)
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError, match="sidecar"):
        train(replace(CONFIG, epochs=1), dataset, tmp_path, resume=True)


def test_resume_refuses_a_checkpoint_with_other_settings(
    dataset: KLDataset, tmp_path: Path
) -> None:
    train(replace(CONFIG, epochs=1), dataset, tmp_path)
    with pytest.raises(CorruptCheckpointError, match="hyper-parameters"):
        train(replace(CONFIG, epochs=1, lr=1e-2), dataset, tmp_path, resume=True)


def test_config_round_trips_and_rejects_nonsense() -> None:
    assert TrainConfig.from_dict(json.loads(json.dumps(CONFIG.to_dict()))) == CONFIG
    with pytest.raises(ValueError, match="loss"):
        replace(CONFIG, loss="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        replace(CONFIG, batch_size=1)


def test_early_stopping_when_validation_qwk_stalls(dataset: KLDataset, tmp_path: Path) -> None:
    # With a zero learning rate only BatchNorm's running statistics move; once they settle,
    # validation QWK can only tie, and ``patience`` epochs later training stops.
    result = train(replace(CONFIG, epochs=10, lr=0.0, patience=2), dataset, tmp_path)
    improved = [s.improved for s in result.history]
    assert all(s.val_qwk is not None for s in result.history)  # patience reads every epoch
    assert result.stopped_early and len(improved) < 10
    assert improved[-2:] == [False, False]
    assert result.best_epoch == max(epoch for epoch, flag in enumerate(improved, 1) if flag)


def test_a_fixed_schedule_validates_every_few_epochs_and_after_the_last(
    dataset: KLDataset, tmp_path: Path
) -> None:
    config = replace(CONFIG, epochs=5, validate_every=2, patience=None)
    result = train(config, dataset, tmp_path)
    validated = [s.epoch for s in result.history if s.val_qwk is not None]
    assert validated == [2, 4, 5]
    skipped = result.history[0]
    assert (skipped.val_loss, skipped.val_accuracy, skipped.improved) == (None, None, False)
    assert skipped.summary().endswith("not validated")
    assert "val QWK" in result.history[-1].summary()
    assert result.best_epoch in validated
    document = json.loads(result.card_path.read_text())
    assert [row["val_qwk"] is None for row in document["history"]] == [
        True, False, True, False, False
    ]  # fmt: skip
    with pytest.raises(ValueError, match="validate_every"):
        replace(CONFIG, validate_every=0)


def test_augmentation_is_seeded_in_range_and_never_flips() -> None:
    images = torch.zeros(16, 1, 64, 64)
    images[..., :24] = 1.0  # bright left third
    first = augment_batch(images, torch.Generator().manual_seed(3))
    again = augment_batch(images, torch.Generator().manual_seed(3))
    other = augment_batch(images, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.min() >= 0.0 and first.max() <= 1.0
    left, right = first[..., :32].mean(dim=(1, 2, 3)), first[..., 32:].mean(dim=(1, 2, 3))
    assert (left > right + 0.3).all()


def test_class_weights_favour_rare_grades() -> None:
    labels = torch.tensor([0] * 8 + [1] * 4 + [2] * 2 + [3, 4])
    weights = class_weights(labels)
    assert torch.all(weights[1:] >= weights[:-1])
    assert torch.isclose(weights.mean(), torch.tensor(1.0))
    assert torch.isclose(weights[4] / weights[0], torch.tensor(8.0))


def test_ordinal_loss_punishes_distant_grades_more() -> None:
    near = torch.tensor([[0.0, 6.0, 0.0, 0.0, 0.0]])
    far = torch.tensor([[0.0, 0.0, 0.0, 0.0, 6.0]])
    target, weights = torch.tensor([0]), torch.ones(5)
    ce, ordinal = replace(CONFIG, loss="ce"), replace(CONFIG, loss="ordinal")
    assert torch.isclose(kl_loss(near, target, weights, ce), kl_loss(far, target, weights, ce))
    assert kl_loss(far, target, weights, ordinal) > kl_loss(near, target, weights, ordinal) + 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_and_inference(dataset: KLDataset, tmp_path: Path) -> None:
    result = train(replace(CONFIG, epochs=2, device="cuda"), dataset, tmp_path)
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(s.train_loss)) for s in result.history)
    model = load_model(result.weights_path, result.card, "cuda")
    assert next(model.parameters()).is_cuda
