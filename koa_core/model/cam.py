"""Class-activation maps: where on the knee the grader found evidence for a grade.

The grader ends in global average pooling and one linear layer (``PooledGrader``), so the
logit of grade ``k`` is ``sum_c w[k, c] * mean_xy A[c, x, y] + b[k]`` for the last feature
maps ``A``; the map ``sum_c w[k, c] * A[c]`` (Zhou et al. 2016) spreads that logit over the
image. It is Grad-CAM on the same layer up to a constant factor (Grad-CAM's channel weights
are the spatially averaged gradients, ``w[k, c] / (h * w)``), with one forward pass and no
backward. Dropout between pooling and ``fc`` is the identity in eval mode, so the head is
exactly ``fc``. A reader-noise layer after ``fc`` (``network.reader_noise_logits``) models
the readers, not the knee, so the maps stay those of ``fc``'s logits. Like Grad-CAM, only
positive evidence is kept (ReLU), and each map is scaled to a maximum of 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from koa_core.errors import CamError
from koa_core.model.card import ModelCard
from koa_core.model.fastpath import Forward
from koa_core.model.inference import to_model_input
from koa_core.model.network import PooledGrader, kl_probabilities
from koa_core.schema import NUM_CLASSES


def activation_maps(
    model: PooledGrader, images: torch.Tensor, grades: torch.Tensor
) -> torch.Tensor:
    """Raw CAMs at feature resolution, (N, h, w) float32: ``sum_c w[grade, c] * A[c]``."""
    return _weighted_maps(model.feature_maps(images).float(), model.fc.weight, grades)


def _weighted_maps(maps: torch.Tensor, weight: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nc,nchw->nhw", weight.float()[grades], maps)


def _unit_scaled(maps: torch.Tensor) -> torch.Tensor:
    """Each (N, H, W) non-negative map divided by its maximum (an all-zero map stays zero)."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp_min(1e-12), torch.zeros_like(maps))


def _heatmaps(raw: torch.Tensor, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Feature-grid CAMs as unit-scaled input-size heatmaps: ReLU, then upsample, as Grad-CAM."""
    upsampled = F.interpolate(
        raw.clamp_min(0.0)[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0]
    return np.ascontiguousarray(_unit_scaled(upsampled).cpu().numpy(), dtype=np.float32)


def _grade_index(
    grades: Sequence[int] | torch.Tensor, count: int, device: torch.device
) -> torch.Tensor:
    index = torch.as_tensor(grades, dtype=torch.long, device=device).reshape(-1)
    if index.shape[0] != count or bool(((index < 0) | (index >= NUM_CLASSES)).any()):
        raise CamError(f"need one KL grade 0-{NUM_CLASSES - 1} per image; got {index.tolist()}")
    return index


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
    index = _grade_index(grades, images.shape[0], model.fc.weight.device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            raw = activation_maps(model, images.to(model.fc.weight.device), index)
            return _heatmaps(raw, (images.shape[2], images.shape[3]))
    finally:
        model.train(was_training)


def predict_with_heatmaps(
    forward: Forward, card: ModelCard, images: torch.Tensor, batch_size: int = 64
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """KL probabilities (N, 5) and the CAM of each predicted grade (N, S, S), one pass.

    The logits are pooled from the same feature maps the CAMs weigh, so scoring with
    heatmaps costs one forward pass, as scoring without them does.

    Args:
        forward: the scoring forward (``koa_core.model.fastpath.optimise_for_inference``).
        card: the model's card (normalisation).
        images: (N, S, S) or (N, 1, S, S), uint8 or float in [0, 1].
        batch_size: images per forward pass.
    """
    probabilities, heatmaps = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = to_model_input(images[start : start + batch_size], card, forward.device)
            logits, maps = forward.with_maps(batch)
            grades = logits.argmax(dim=1)
            probabilities.append(kl_probabilities(logits).cpu().numpy())
            raw = _weighted_maps(maps, forward.head.weight, grades)
            heatmaps.append(_heatmaps(raw, (batch.shape[2], batch.shape[3])))
    if not probabilities:
        size = card.input_size
        return np.zeros((0, NUM_CLASSES), np.float32), np.zeros((0, size, size), np.float32)
    return np.concatenate(probabilities).astype(np.float32), np.concatenate(heatmaps)
