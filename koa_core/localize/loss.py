"""The localizer's training loss: CenterNet focal loss for knees and side-view joints, offset
L1, handedness BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from koa_core.localize.heatmap import Targets
from koa_core.localize.network import HANDED, HEAT, OFFSET_X, OFFSET_Y, VIEW, view_logits

FOCAL_ALPHA = 2.0
FOCAL_BETA = 4.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (CenterNet, Zhou et al. 2019) per knee.

    Cells near a centre are negatives weighted down by ``(1 - target) ** beta``, so a peak
    one cell off costs little; the sum is divided by the number of knees (at least 1).
    """
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    positive = centre * (1 - p) ** FOCAL_ALPHA * log_p
    negative = (1 - centre) * (1 - target) ** FOCAL_BETA * p**FOCAL_ALPHA * log_not_p
    return -(positive + negative).sum() / centre.sum().clamp(min=1.0)


def localizer_loss(
    maps: torch.Tensor, targets: Targets, handed_weight: float = 1.0, view_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of raw head output ``maps`` (N, 4 or 5, H, W) and its parts (for the log);
    the view term only where the maps have a view channel: focal loss on the side-view
    joints' heat, and for a lateral view whose joint is not known, binary cross-entropy of
    the film's best cell (it must be somewhere)."""
    maps = maps.float()
    heat = focal_loss(maps[:, HEAT], targets.heat, targets.centre)
    knees = targets.centre.sum().clamp(min=1.0)
    offset_error = (maps[:, [OFFSET_X, OFFSET_Y]] - targets.offset).abs().sum(dim=1)
    offset = (offset_error * targets.centre).sum() / knees
    handed_terms = F.binary_cross_entropy_with_logits(
        maps[:, HANDED], targets.handed, reduction="none"
    )
    handed = (handed_terms * targets.handed_mask).sum() / targets.handed_mask.sum().clamp(min=1.0)
    total = heat + offset + handed_weight * handed
    parts = {"heat": heat.item(), "offset": offset.item(), "handed": handed.item()}
    if maps.shape[1] > VIEW:
        located = targets.view_centre.flatten(1).amax(dim=1) > 0
        unlocated = (targets.lateral > 0) & ~located
        view = focal_loss(
            maps[~unlocated, VIEW], targets.view_heat[~unlocated], targets.view_centre[~unlocated]
        )
        if unlocated.any():
            logits = view_logits(maps[unlocated])
            view = view + F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        total = total + view_weight * view
        parts["view"] = view.item()
    return total, parts
