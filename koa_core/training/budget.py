"""A time budget turned into an epoch count, so a run finishes its whole fixed schedule.

The arithmetic is pure (``epochs_for_budget``) and tested as such; the only measurement
(``measure_seconds``) times a few steps of a throwaway copy of the network on random
inputs of the run's shape, so the run itself, its RNG and its weights are untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from koa_core.errors import TrainingBudgetError
from koa_core.model.inference import autocast, resolve_device
from koa_core.model.network import build_model, place
from koa_core.training.config import TrainConfig

# Plan for this share of the budget: a shared machine's speed drifts between the probe
# and the run, and the evaluations after training need their share too.
BUDGET_SAFETY = 0.85
# A big budget on a small dataset buys no more than this: past a few times the default
# schedule, more epochs of a fixed schedule only overfit the same images.
MAX_BUDGET_EPOCHS = 50


@dataclass(frozen=True)
class StepTimes:
    """Measured seconds of one training step and of one inference batch."""

    train_step_s: float
    eval_batch_s: float


def epoch_seconds(times: StepTimes, n_train: int, n_val: int, batch_size: int) -> float:
    """Predicted seconds of one epoch: its training steps plus its validation pass."""
    train_steps = max(1, n_train // batch_size)
    eval_batches = math.ceil(n_val / batch_size)
    return train_steps * times.train_step_s + eval_batches * times.eval_batch_s


def epochs_for_budget(
    budget_s: float,
    epoch_s: float,
    fixed_s: float = 0.0,
    *,
    max_epochs: int | None = None,
    safety: float = BUDGET_SAFETY,
) -> int:
    """The most epochs whose predicted time, ``fixed_s + epochs * epoch_s``, fits the budget.

    Args:
        budget_s: wall-clock seconds the run may take from now.
        epoch_s: predicted seconds of one epoch (``epoch_seconds``).
        fixed_s: seconds spent outside the epochs (final evaluation, writing files).
        max_epochs: never more than this many (e.g. where more no longer helps).
        safety: share of ``budget_s`` planned for.

    Raises:
        TrainingBudgetError: not even one epoch fits.
        ValueError: a non-positive epoch time.
    """
    if epoch_s <= 0:
        raise ValueError(f"epoch_s must be positive, got {epoch_s}")
    epochs = math.floor((budget_s * safety - fixed_s) / epoch_s)
    if epochs < 1:
        needed = (fixed_s + epoch_s) / safety
        raise TrainingBudgetError(
            f"a budget of {budget_s:.0f} s fits no epoch (one needs about {needed:.0f} s)"
        )
    return epochs if max_epochs is None else min(epochs, max_epochs)


def measure_seconds(config: TrainConfig, steps: int = 3) -> StepTimes:
    """Median seconds of a training step and an inference batch of ``config``'s network."""
    device = resolve_device(config.device)
    model = place(build_model(config.card()), device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    size = (config.batch_size, 1, config.input_size, config.input_size)
    images = torch.rand(size).to(device).contiguous(memory_format=torch.channels_last)
    targets = torch.zeros(config.batch_size, dtype=torch.long, device=device)

    def train_step() -> None:
        with autocast(device, enabled=config.amp):
            logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()

    def eval_batch() -> None:
        with torch.inference_mode(), autocast(device, enabled=config.amp):
            model(images)

    train_s = _median_seconds(train_step, steps, device)
    model.eval()
    return StepTimes(train_s, _median_seconds(eval_batch, steps, device))


def _median_seconds(call: Callable[[], None], repeats: int, device: torch.device) -> float:
    call()  # the first call pays for allocation and kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def plan_epochs(config: TrainConfig, n_train: int, n_eval: int, budget_s: float) -> int:
    """Epochs of ``config``'s schedule that fit ``budget_s`` on this machine, measured now.

    ``n_eval`` is the number of images scored per epoch (validation); the final
    evaluation of validation and test is counted once as fixed time.
    """
    times = measure_seconds(config)
    epoch_s = epoch_seconds(times, n_train, n_eval, config.batch_size)
    fixed_s = 2 * math.ceil(n_eval / config.batch_size) * times.eval_batch_s
    return epochs_for_budget(budget_s, epoch_s, fixed_s, max_epochs=MAX_BUDGET_EPOCHS)
