"""Class-activation maps: where on the knee the grader found evidence for a grade.

The grader ends in global average pooling and one linear layer (``PooledGrader``), so the
logit of grade ``k`` is ``sum_c w[k, c] * mean_xy A[c, x, y] + b[k]`` for the last feature
maps ``A``; the map ``sum_c w[k, c] * A[c]`` (Zhou et al. 2016) spreads that logit over the
image. It is Grad-CAM on the same layer up to a constant factor (Grad-CAM's channel weights
are the spatially averaged gradients, ``w[k, c] / (h * w)``), with one forward pass and no
backward. Dropout between pooling and ``fc`` is the identity in eval mode, so the head is
exactly ``fc``. Like Grad-CAM, only positive evidence is kept (ReLU), and each map is scaled
to a maximum of 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from koa_core.errors import CamError
from koa_core.model.network import PooledGrader
from koa_core.schema import NUM_CLASSES


def activation_maps(
    model: PooledGrader, images: torch.Tensor, grades: torch.Tensor
) -> torch.Tensor:
    """Raw CAMs at feature resolution, (N, h, w) float32: ``sum_c w[grade, c] * A[c]``."""
    maps = model.feature_maps(images).float()
    weights = model.fc.weight.float()[grades]  # (N, C)
    return torch.einsum("nc,nchw->nhw", weights, maps)


def _unit_scaled(maps: torch.Tensor) -> torch.Tensor:
    """Each (N, H, W) non-negative map divided by its maximum (an all-zero map stays zero)."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp_min(1e-12), torch.zeros_like(maps))


def class_activation_maps(
    model: PooledGrader, images: torch.Tensor, grades: Sequence[int] | torch.Tensor
) -> npt.NDArray[np.float32]:
    """The CAM of each image's grade, upsampled to the input size, float32 in [0, 1].

    Args:
        model: the grader (put in eval mode here; its mode is restored after).
        images: (N, 1, H, W), normalised as inference feeds it
            (``koa_core.model.inference.to_model_input``).
        grades: the KL grade to explain per image, usually the predicted one.

    Returns:
        (N, H, W) maps, bilinearly upsampled from the feature grid; 0 where the model saw
        no evidence for the grade, 1 at the strongest.

    Raises:
        CamError: the model has no pooled linear head, or the shapes disagree.
    """
    if not isinstance(model, PooledGrader):
        raise CamError(f"class-activation maps need a PooledGrader, not {type(model).__name__}")
    if images.ndim != 4 or images.shape[1] != 1:
        raise CamError(f"expected (N, 1, H, W) images, got {tuple(images.shape)}")
    device = model.fc.weight.device
    index = torch.as_tensor(grades, dtype=torch.long, device=device).reshape(-1)
    if index.shape[0] != images.shape[0] or bool(((index < 0) | (index >= NUM_CLASSES)).any()):
        raise CamError(f"need one KL grade 0-{NUM_CLASSES - 1} per image; got {index.tolist()}")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # ReLU on the feature grid, then upsample, as Grad-CAM does.
            maps = activation_maps(model, images.to(device), index).clamp_min(0.0)
            upsampled = F.interpolate(
                maps[:, None], size=tuple(images.shape[2:]), mode="bilinear", align_corners=False
            )[:, 0]
            scaled = _unit_scaled(upsampled)
    finally:
        model.train(was_training)
    return np.ascontiguousarray(scaled.cpu().numpy(), dtype=np.float32)
