"""The grading loss: class-weighted cross-entropy, optionally smoothed, and an ordinal term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from koa_core.schema import NUM_CLASSES, adjacent_mixing
from koa_core.training.config import TrainConfig


def class_weights(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Inverse-frequency class weights, mean 1 over the classes present (imbalance)."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), 0.0)
    return weights / weights[counts > 0].mean()


def adjacent_targets(
    targets: torch.Tensor, share: float, num_classes: int = NUM_CLASSES
) -> torch.Tensor:
    """Target distributions with ``share`` of each grade's mass on its neighbours."""
    rows = torch.as_tensor(adjacent_mixing(share, num_classes), dtype=torch.float32)
    return rows.to(targets.device)[targets]


def kl_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    """Weighted, optionally label-smoothed cross-entropy, plus the expected-grade error for
    ``"ordinal"``; ``weights`` are per class (ones for plain cross-entropy)."""
    logits = logits.float()
    smoothed = config.label_smoothing
    if config.adjacent_smoothing:
        soft = adjacent_targets(targets, config.adjacent_smoothing, logits.shape[1])
        loss = F.cross_entropy(logits, soft, weight=weights, label_smoothing=smoothed)
    else:
        loss = F.cross_entropy(logits, targets, weight=weights, label_smoothing=smoothed)
    if config.loss == "ordinal":
        grades = torch.arange(logits.shape[1], device=logits.device, dtype=torch.float32)
        expected = (torch.softmax(logits, dim=1) * grades).sum(dim=1)
        sample_weights = weights[targets]
        error = (expected - targets.float()).abs() * sample_weights
        loss = loss + config.ordinal_weight * error.sum() / sample_weights.sum()
    return loss
