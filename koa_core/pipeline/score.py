"""Batched inference on a prepared chunk: knee inputs in, one row per knee out (grade, set).

The model is loaded once per worker process (``loaded_model`` is cached), so a worker that
scores many chunks pays for reading the weights, and for building its fast forward
(``koa_core.model.fastpath``), once.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from koa_core.evaluation.conformal import prediction_sets
from koa_core.evaluation.referral import referral
from koa_core.evaluation.set_calibration import card_calibration
from koa_core.model.cam import class_activation_maps, predict_with_heatmaps
from koa_core.model.card import ModelCard, read_card
from koa_core.model.checkpoint import load_model
from koa_core.model.fastpath import Forward, optimise_for_inference
from koa_core.model.inference import predict_dataset, resolve_device, to_model_input
from koa_core.model.network import GraderNet
from koa_core.pipeline.prepare import save_array_atomically
from koa_core.schema import CARD_NAME, PROBABILITY_COLUMNS, WEIGHTS_NAME, p_koa


@lru_cache(maxsize=2)
def loaded_model(model_dir: str, device: str) -> tuple[GraderNet, ModelCard]:
    """The model in ``model_dir`` (``weights.pt`` + ``card.json``) on ``device``, cached."""
    card = read_card(Path(model_dir) / CARD_NAME)
    model = load_model(Path(model_dir) / WEIGHTS_NAME, card, resolve_device(device))
    return model, card


@lru_cache(maxsize=2)
def fast_forward(model_dir: str, device: str) -> Forward:
    """The fastest forward of ``loaded_model(model_dir, device)`` on ``device``, cached."""
    model, card = loaded_model(model_dir, device)
    return optimise_for_inference(model, card, device)


def score_chunk(
    array_path: str,
    rows: list[dict[str, Any]],
    model_dir: str,
    device: str = "auto",
    batch_size: int = 64,
    refer_below: float = 0.0,
    heatmaps: bool = False,
    tta: bool = False,
) -> list[dict[str, Any]]:
    """Probabilities of KL 0-4, the grade and P(KOA) for the images of one chunk.

    Args:
        array_path: the chunk's uint8 stack written by ``prepare_chunk``.
        rows: the rows that belong to the stack, in its order; a subset (the rows that
            passed the model-input checks) is allowed: each row's ``array_index`` says which
            image it is.
        model_dir: folder with ``weights.pt`` and ``card.json``.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        batch_size: images per forward pass.
        refer_below: a knee whose localizer score is under this is referred to a reader.
        heatmaps: also write each knee's class-activation map of its grade, in its ROI's
            orientation, to ``heatmap_path(array_path)`` (float16, in the rows' order).
        tta: test-time augmentation (``KOA_SCORING_TTA``): shifts and zooms, never a flip.

    Returns:
        ``rows`` extended with ``p_kl0``..``p_kl4``, ``kl_grade``, ``p_koa``, the
        conformal ``grade_set`` (the grade alone for an uncalibrated model), ``refer`` and
        ``refer_reason`` (``koa_core.evaluation.referral``).
    """
    if not rows:
        return []
    model, card = loaded_model(model_dir, device)
    stack = np.load(array_path, mmap_mode="r")
    indices = [int(row["array_index"]) for row in rows]
    images = torch.from_numpy(np.ascontiguousarray(stack[indices]))
    forward = fast_forward(model_dir, device)
    if heatmaps and not tta:
        probabilities, maps = predict_with_heatmaps(forward, card, images, batch_size)
    else:
        probabilities = predict_dataset(
            model, card, images, batch_size, device, forward=forward, tta=tta
        )
    if heatmaps:
        if tta:  # TTA averages several views: its grade is explained on the plain one
            batch = to_model_input(images, card, next(model.parameters()).device)
            maps = class_activation_maps(model, batch, np.argmax(probabilities, axis=1).tolist())
        save_array_atomically(heatmap_path(array_path), maps.astype(np.float16))
    calibration = card_calibration(card)
    sets = prediction_sets(probabilities, calibration) if calibration else None
    scored = []
    for index, (row, probs) in enumerate(zip(rows, probabilities, strict=True)):
        grade = int(np.argmax(probs))
        grade_set = sets[index] if sets is not None else (grade,)
        scored.append({**row, **_outputs(probs), "grade_set": list(grade_set)})
        if heatmaps:
            scored[-1].update(heatmap_path=str(heatmap_path(array_path)), heatmap_index=index)
        scored[-1].update(_referral(scored[-1], card, refer_below))
    return scored


def heatmap_path(array_path: str) -> Path:
    """Where ``score_chunk`` keeps a chunk's heatmaps: beside its input stack."""
    path = Path(array_path)
    return path.with_name(f"{path.stem}-heatmaps.npy")


def _outputs(probs: npt.NDArray[np.float32]) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: float(p) for name, p in zip(PROBABILITY_COLUMNS, probs, strict=True)
    }
    values["kl_grade"] = int(np.argmax(probs))
    values["p_koa"] = float(p_koa(probs[None])[0])
    return values


def _referral(row: dict[str, Any], card: ModelCard, refer_below: float) -> dict[str, Any]:
    in_range = card.input_in_range(float(row["mean"]), float(row["std"]))
    refer, reason = referral(row["grade_set"], row.get("localizer_score"), refer_below, in_range)
    return {"refer": refer, "refer_reason": reason}
