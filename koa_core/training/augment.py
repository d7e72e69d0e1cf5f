"""Training-time augmentation of preprocessed knee inputs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, strength: float = 1.0
) -> torch.Tensor:
    """Anatomically plausible random variants of a [0, 1] batch (N, 1, H, W).

    At ``strength`` 1: rotation ±7°, scale ±10 %, shift ±6 %, gamma 0.8-1.25, contrast
    ±15 %, exposure ±5 %, Gaussian noise up to σ 0.02; ``strength`` scales every range.
    Never a flip: laterality is already canonical.
    Random numbers come from ``generator`` (on the CPU) so runs repeat exactly.
    """
    n = images.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        values = torch.rand((n, *shape), generator=generator) * (high - low) + low
        return values.to(images.device)

    s = strength
    angle = uniform(-7.0 * s, 7.0 * s) * (math.pi / 180.0)
    scale = uniform(1.0 - 0.1 * s, 1.0 + 0.1 * s)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], dim=1
    )  # (N, 2, 2)
    theta = torch.cat([theta, uniform(-0.06 * s, 0.06 * s, 2, 1)], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    out = out.clamp(1e-6, 1.0) ** torch.exp(uniform(-0.223 * s, 0.223 * s, 1, 1, 1))
    mean = out.mean(dim=(2, 3), keepdim=True)
    contrast = uniform(1.0 - 0.15 * s, 1.0 + 0.15 * s, 1, 1, 1)
    out = (out - mean) * contrast + mean + uniform(-0.05 * s, 0.05 * s, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    out = out + noise * uniform(0.0, 0.02 * s, 1, 1, 1)
    return out.clamp(0.0, 1.0)
