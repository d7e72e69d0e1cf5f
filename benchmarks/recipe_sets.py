"""Phantom KL sets of increasing difficulty, the reference CNN and scoring, for recipe benchmarks.

The reference is the 40-line CNN of issue 16, written here independently of koa's
training code so that it is a fair yardstick: four blocks of two 3x3 conv + BN + ReLU and
a 2x2 max-pool (16-32-64-128 channels), global average pooling, one linear layer; AdamW,
OneCycle to 3e-3, 12 epochs, batch 32, bf16 autocast where the CPU has it, plain
cross-entropy, no augmentation, the last epoch's weights.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from koa_core.data.datasets import KLDataset
from koa_core.evaluation.conformal import fit_conformal, set_quality
from koa_core.evaluation.evaluate import evaluate_probabilities
from koa_core.model.inference import autocast, resolve_device
from koa_core.phantom import kl_folder_image

SET_LEVEL = 0.9
"""Nominal coverage of the prediction sets scored (the model card's default)."""

# name -> (difficulty, label noise): "demo" is the demo's own generator (5 % label noise).
SETS: dict[str, tuple[str | None, float]] = {
    "demo": (None, 0.05),
    "normal": ("normal", 0.0),
    "hard": ("hard", 0.0),
    "harder": ("harder", 0.0),
}


@dataclass(frozen=True)
class SetSize:
    """Images per split; test images come from another seed than train and val.

    A perfectly calibrated model shows an ECE of ~0.04 on 600 test images of the hard sets
    (``calibrated_ece_floor``), above issue 16's 0.03 target; on 2,000 about 0.02, so the
    target measures the model rather than the sample.
    """

    train: int = 420
    val: int = 400
    test: int = 2000


def _write_chunk(args: tuple[str, int, list[tuple[int, str]], str | None, float]) -> int:
    out, seed, items, difficulty, noise = args
    torch.set_num_threads(1)
    for index, split in items:
        kl_folder_image(Path(out), seed, index, split, "png", noise, difficulty=difficulty)
    return len(items)


def write_set(out: Path, name: str, size: SetSize, seed: int, workers: int = 2) -> float:
    """Write set ``name`` (label noise in every split) under ``out``; the seconds it took."""
    if (out / "test").is_dir():
        return 0.0
    difficulty, noise = SETS[name]
    started = time.perf_counter()
    items = [(i, "train") for i in range(size.train)]
    items += [(size.train + i, "val") for i in range(size.val)]
    tests = [(i, "test") for i in range(size.test)]
    chunks = []
    for chunk_seed, chunk_items in ((seed, items), (seed + 1000, tests)):
        for start in range(0, len(chunk_items), 50):
            part = chunk_items[start : start + 50]
            chunks.append((str(out), chunk_seed, part, difficulty, noise))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        assert sum(pool.imap_unordered(_write_chunk, chunks)) == size.train + size.val + size.test
    return time.perf_counter() - started


class ReferenceCNN(nn.Module):
    """Issue 16's reference: 4 x (2 x [3x3 conv, BN, ReLU], max-pool), GAP, linear."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False)]
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _inputs(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() / 255.0 - 0.5) / 0.25).unsqueeze(1)


def reference_probs(
    model: nn.Module, images: torch.Tensor, device: torch.device, amp: bool = True
) -> np.ndarray:
    """Softmax of the reference on uint8 images (N, S, S), in eval mode."""
    model.eval()
    out = []
    with torch.inference_mode(), autocast(device, enabled=amp):
        for start in range(0, len(images), 64):
            out.append(
                torch.softmax(model(_inputs(images[start : start + 64]).to(device)).float(), 1)
            )
    return torch.cat(out).cpu().numpy()


def train_reference(
    dataset: KLDataset, seed: int = 0, device: str = "auto", amp: bool = True
) -> nn.Module:
    """Train the reference on ``dataset``'s train split: 12 epochs, OneCycle to 3e-3.

    ``amp``: bf16 autocast where the CPU has native bf16 (the issue's setting).
    """
    target = resolve_device(device)
    torch.manual_seed(seed)
    model = ReferenceCNN().to(target)
    train = dataset.splits["train"]
    epochs, batch = 12, 32
    steps = len(train.labels) // batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train.labels), generator=generator)
        for step in range(steps):
            index = order[step * batch : (step + 1) * batch]
            with autocast(target, enabled=amp):
                logits = model(_inputs(train.images[index]).to(target))
            loss = nn.functional.cross_entropy(logits.float(), train.labels[index].to(target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    return model


def score(
    dataset: KLDataset, test_probs: np.ndarray, val_probs: np.ndarray, reader_share: float = 0.0
) -> dict[str, Any]:
    """Test metrics, with the temperature fitted on validation (ECE after it); ``reader_share``
    is the grader's reader-noise layer (0 for none), where its temperature may apply."""
    test, val = dataset.splits["test"], dataset.splits["val"]
    evaluation = evaluate_probabilities(
        test.labels.numpy(),
        test_probs,
        val_labels=val.labels.numpy(),
        val_probs=val_probs,
        reader_share=reader_share,
    )
    metrics = evaluation.metrics
    temperature = evaluation.temperature
    assert temperature is not None
    # The sets koa's scoring would give: calibrated on validation after its temperature.
    calibration = fit_conformal(
        val_probs,
        val.labels.numpy(),
        SET_LEVEL,
        temperature=temperature.value,
        temperature_reader_share=temperature.reader_share,
    )
    sets = set_quality(test_probs, test.labels.numpy(), calibration)
    return {
        "set_coverage": sets.coverage,
        "mean_set_size": sets.mean_set_size,
        "qwk": metrics.qwk,
        "accuracy": metrics.accuracy,
        "auc_koa": metrics.auc_koa,
        "ece": metrics.ece,
        "ece_calibrated": metrics.ece_calibrated,
        "ece_calibrated_ci": metrics.ece_calibrated_ci,
        "ece_calibrated_floor": metrics.ece_calibrated_floor,
        "ece_grade_noise": metrics.ece_grade_noise,
        "ece_grade_noise_ci": metrics.ece_grade_noise_ci,
        "grade_noise_share": metrics.grade_noise_share,
        "temperature": temperature.value,
        "temperature_on_head": temperature.reader_share > 0,
    }


def reference_run(dataset: KLDataset, amp: bool) -> dict[str, Any]:
    """Train the reference CNN on ``dataset``; its test metrics (``score``) and seconds."""
    started = time.perf_counter()
    model = train_reference(dataset, amp=amp)
    seconds = time.perf_counter() - started
    device = resolve_device("auto")
    test, val = dataset.splits["test"], dataset.splits["val"]
    row = score(
        dataset,
        reference_probs(model, test.images, device, amp),
        reference_probs(model, val.images, device, amp),
    )
    return {**row, "seconds": seconds}
