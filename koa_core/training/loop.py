"""The training loop of the KL-grading CNN: epochs, best weights, checkpoint and exact resume.

An output directory holds ``weights.pt`` (the state_dict ``TrainConfig.keep`` names),
``card.json`` (model card, hyper-parameters, data fingerprint, history) and
``checkpoint.pt`` (everything needed to continue: model, optimizer, scheduler, grad
scaler, RNG states, early-stopping state), each written atomically with a sha256 sidecar.

Determinism: the shuffling and augmentation of epoch ``e`` come from a generator seeded
with (``seed``, ``e``), and the global torch RNG (dropout) is saved in every checkpoint, so
an interrupted run resumed from its last checkpoint ends with the same weights as one that
never stopped (same device, threads and precision).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, cohen_kappa_score
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from koa_core.data.datasets import KLDataset, Split, load_dataset
from koa_core.errors import CorruptCheckpointError
from koa_core.model.card import ModelCard
from koa_core.model.checkpoint import load_torch, save_torch
from koa_core.model.inference import autocast, autocast_dtype, predict_dataset, resolve_device
from koa_core.model.network import GraderNet, build_model, place
from koa_core.schema import CARD_NAME, GRADES, WEIGHTS_NAME
from koa_core.storage.files import atomic_write_bytes
from koa_core.training.augment import augment_batch
from koa_core.training.config import TrainConfig
from koa_core.training.loss import class_weights, kl_loss

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did; passed to the progress callback and kept in the history.

    The ``val_*`` fields are ``None`` for an epoch that was not validated (``validates``).
    """

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float | None
    val_qwk: float | None
    val_accuracy: float | None
    lr: float
    seconds: float
    improved: bool

    def summary(self) -> str:
        """The epoch's losses and validation QWK in words, for progress lines."""
        said = f"train loss {self.train_loss:.4f}"
        if self.val_loss is None or self.val_qwk is None:
            return f"{said}, not validated"
        return f"{said}, val loss {self.val_loss:.4f}, val QWK {self.val_qwk:.4f}"


@dataclass(frozen=True)
class TrainResult:
    """Where a run left its files, and how it went."""

    out_dir: Path
    weights_path: Path
    card_path: Path
    checkpoint_path: Path
    card: ModelCard
    best_epoch: int
    best_val_qwk: float
    stopped_early: bool
    fingerprint: str
    history: tuple[EpochStats, ...]
    skipped: int


Progress = Callable[[EpochStats], None]


@dataclass
class _State:
    """The early-stopping bookkeeping that a checkpoint carries across a resume."""

    epoch: int = 0
    best_qwk: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[EpochStats] = field(default_factory=list)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Batches per epoch; a last batch of one image is dropped (BatchNorm needs two)."""
    return n_images // batch_size + (1 if n_images % batch_size >= 2 else 0)


def _epoch_generator(config: TrainConfig, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)


class _Run:
    """Model, optimizer, schedule and early-stopping state of one training run."""

    def __init__(self, config: TrainConfig, train: Split, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.card = config.card()
        torch.manual_seed(config.seed)
        self.model: GraderNet = place(build_model(self.card), device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=config.lr,
            total_steps=config.epochs * steps_per_epoch(len(train.labels), config.batch_size),
        )
        fp16 = autocast_dtype(device) == torch.float16 and config.amp
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        weights = class_weights(train.labels) if config.class_weighted else torch.ones(5)
        self.weights = weights.to(device)
        # The average is of every step's weights and BatchNorm statistics (use_buffers).
        self.ema: AveragedModel | None = None
        if config.keep == "ema":
            average = get_ema_multi_avg_fn(config.ema_decay)  # type: ignore[no-untyped-call]
            self.ema = AveragedModel(self.model, multi_avg_fn=average, use_buffers=True)
        self.state = _State()

    def kept_model(self) -> GraderNet:
        """The network that is validated and written: the moving average, or the model."""
        module = self.model if self.ema is None else self.ema.module
        assert isinstance(module, GraderNet)
        return module

    def train_epoch(self, train: Split) -> float:
        """One pass over ``train`` in the epoch's shuffled order; the mean loss."""
        config = self.config
        generator = _epoch_generator(config, self.state.epoch)
        order = torch.randperm(len(train.labels), generator=generator)
        self.model.train()
        total, seen = 0.0, 0
        for step in range(steps_per_epoch(len(order), config.batch_size)):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            images = train.images[index].to(self.device).unsqueeze(1).float().div_(255.0)
            if config.augment:
                images = augment_batch(images, generator, config.augment_strength)
            images = ((images - self.card.mean) / self.card.std).contiguous(
                memory_format=torch.channels_last
            )
            targets = train.labels[index].to(self.device)
            with autocast(self.device, enabled=config.amp):
                logits = self.model(images)
            loss = kl_loss(logits, targets, self.weights, config)
            self.optimizer.zero_grad(set_to_none=True)
            scaled: torch.Tensor = self.scaler.scale(loss)
            torch.autograd.backward(scaled)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total, seen = total + float(loss.detach()) * len(index), seen + len(index)
        return total / max(seen, 1)

    def evaluate(self, val: Split) -> tuple[float, float, float]:
        """Validation (loss, quadratic weighted kappa, accuracy)."""
        probs = predict_dataset(
            self.kept_model(),
            self.card,
            val.images,
            self.config.batch_size,
            self.device,
            self.config.amp,
        )
        labels = val.labels.numpy()
        loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)).mean())
        predicted = probs.argmax(axis=1)
        qwk = float(cohen_kappa_score(labels, predicted, weights="quadratic", labels=GRADES))
        # Kappa is undefined (nan) when one rater uses a single grade: count it as chance.
        return loss, 0.0 if math.isnan(qwk) else qwk, float(accuracy_score(labels, predicted))

    def state_dict(self, fingerprint: str) -> dict[str, Any]:
        """Everything a resume needs, in types ``torch.load(weights_only=True)`` accepts."""
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.resume_key(),
            "fingerprint": fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": {} if self.ema is None else self.ema.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda_rng},
            "state": {**asdict(self.state), "history": [asdict(s) for s in self.state.history]},
        }

    def load_state_dict(self, checkpoint: dict[str, Any], fingerprint: str) -> None:
        """Continue from ``checkpoint``, refusing one written for other settings or data."""
        if checkpoint.get("config") != self.config.resume_key():
            raise CorruptCheckpointError("checkpoint was written with other hyper-parameters")
        if checkpoint.get("fingerprint") != fingerprint:
            raise CorruptCheckpointError("checkpoint was written for another dataset")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if checkpoint["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        state = dict(checkpoint["state"])
        history = [EpochStats(**stats) for stats in state.pop("history")]
        self.state = _State(**state, history=history)


def _write_card(run: _Run, dataset: KLDataset, path: Path) -> None:
    """``card.json``: the card plus everything needed to know where the weights came from."""
    state = run.state
    document = {
        "card": run.card.to_dict(),
        "hyperparameters": run.config.to_dict(),
        "data": {
            "root": str(dataset.root),
            "fingerprint": dataset.fingerprint,
            "class_counts": {name: split.class_counts() for name, split in dataset.splits.items()},
            "skipped": [asdict(skipped) for skipped in dataset.skipped],
        },
        "best_epoch": state.best_epoch,
        "best_val_qwk": state.best_qwk,
        "history": [asdict(stats) for stats in state.history],
        "torch_version": torch.__version__,
    }
    atomic_write_bytes(path, json.dumps(document, indent=2).encode())


def validates(config: TrainConfig, epoch: int) -> bool:
    """Whether ``epoch`` (1-based) ends with a validation pass.

    Early stopping and keeping the best weights choose by every epoch's validation; a
    fixed schedule keeping the last (or averaged) weights only reports it, so it
    validates every ``validate_every`` epochs and at the end, where a pass per epoch
    cost a fifth of the training time (benchmarks/RESULTS.md, run 9).
    """
    if config.keep == "best" or config.patience is not None or epoch == config.epochs:
        return True
    return epoch % config.validate_every == 0


def _one_epoch(run: _Run, dataset: KLDataset, out_dir: Path) -> EpochStats:
    """Train, validate, keep the best weights and write the checkpoint for one epoch."""
    started = time.perf_counter()
    lr = float(run.scheduler.get_last_lr()[0])
    train_loss = run.train_epoch(dataset.splits["train"])
    state = run.state
    state.epoch += 1
    validation: tuple[float | None, float | None, float | None] = (None, None, None)
    improved = False
    if validates(run.config, state.epoch):
        validation = run.evaluate(dataset.splits["val"])
        qwk = validation[1]
        improved = qwk > state.best_qwk
        if improved:
            state.best_qwk, state.best_epoch, state.bad_epochs = qwk, state.epoch, 0
        else:
            state.bad_epochs += 1
    if improved or run.config.keep != "best":
        save_torch(run.kept_model().state_dict(), out_dir / WEIGHTS_NAME)
    stats = EpochStats(
        state.epoch,
        run.config.epochs,
        train_loss,
        *validation,
        lr,
        time.perf_counter() - started,
        improved,
    )
    state.history.append(stats)
    save_torch(run.state_dict(dataset.fingerprint), out_dir / CHECKPOINT_NAME)
    return stats


def _set_threads(config: TrainConfig) -> int:
    # torch already defaults to one thread per physical core; ``threads`` narrows it
    # when other work shares the machine.
    previous = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    return previous


def train(
    config: TrainConfig,
    data: Path | KLDataset,
    out_dir: Path,
    resume: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a KL-grading model on ``data`` and leave weights, card and checkpoint in ``out_dir``.

    Args:
        config: hyper-parameters.
        data: a dataset folder (see ``koa_core.data.datasets``) or an already loaded dataset.
        out_dir: where ``weights.pt``, ``card.json`` and ``checkpoint.pt`` go.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        progress: called after every epoch with its :class:`EpochStats`.

    Raises:
        DatasetError: the dataset cannot be used.
        CorruptCheckpointError: ``resume`` found a damaged or mismatched checkpoint.
    """
    dataset = data if isinstance(data, KLDataset) else _load(config, data)
    previous_threads = _set_threads(config)
    try:
        run = _Run(config, dataset.splits["train"], resolve_device(config.device))
        checkpoint = out_dir / CHECKPOINT_NAME
        if resume and checkpoint.is_file():
            # Loaded on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
            run.load_state_dict(load_torch(checkpoint), dataset.fingerprint)
            log.info("resuming %s after epoch %d", out_dir, run.state.epoch)
        state = run.state
        patience = config.patience or math.inf
        while state.epoch < config.epochs and state.bad_epochs < patience:
            stats = _one_epoch(run, dataset, out_dir)
            if progress is not None:
                progress(stats)
    finally:
        torch.set_num_threads(previous_threads)
    _write_card(run, dataset, out_dir / CARD_NAME)
    return TrainResult(
        out_dir=out_dir,
        weights_path=out_dir / WEIGHTS_NAME,
        card_path=out_dir / CARD_NAME,
        checkpoint_path=checkpoint,
        card=run.card,
        best_epoch=state.best_epoch,
        best_val_qwk=state.best_qwk,
        stopped_early=state.epoch < config.epochs,
        fingerprint=dataset.fingerprint,
        history=tuple(state.history),
        skipped=len(dataset.skipped),
    )


def _load(config: TrainConfig, data: Path) -> KLDataset:
    cache = Path(config.cache_dir) if config.cache_dir else None
    return load_dataset(
        data, config.input_size, cache_dir=cache, max_skipped_share=config.max_skipped_share
    )
