"""Test-time augmentation: small shifts and scale jitter of a model-input batch, never a flip.

A horizontal flip is not a valid view of a knee: inputs are already mirrored to
right-knee orientation, and medial and lateral compartments differ (narrowing and spurs
start medially), so a flipped knee is another knee. The views here move the joint by a
few percent of the field or zoom by 5 %, the jitter positioning and magnification add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (scale, shift x, shift y), shifts in the [-1, 1] frame of affine_grid (0.04 = 2 % of side).
TTA_VIEWS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (1.0, 0.04, 0.04),
    (1.0, -0.04, -0.04),
    (1.05, 0.0, 0.0),
    (0.95, 0.0, 0.0),
)


def tta_view(batch: torch.Tensor, scale: float, shift_x: float, shift_y: float) -> torch.Tensor:
    """``batch`` (N, C, H, W) zoomed by ``scale`` and shifted, edges replicated."""
    if (scale, shift_x, shift_y) == (1.0, 0.0, 0.0):
        return batch
    theta = torch.tensor(
        [[1.0 / scale, 0.0, shift_x], [0.0, 1.0 / scale, shift_y]],
        dtype=batch.dtype,
        device=batch.device,
    ).expand(batch.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    view = F.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    return view.contiguous(memory_format=torch.channels_last)
