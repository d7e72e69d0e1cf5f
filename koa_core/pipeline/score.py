"""Batched inference on a prepared chunk: model inputs in, one probability row per image out.

The model is loaded once per worker process (``loaded_model`` is cached), so a worker that
scores many chunks pays for reading the weights, and for building its fast forward
(``koa_core.model.fastpath``), once.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from koa_core.model.card import ModelCard, read_card
from koa_core.model.checkpoint import load_model
from koa_core.model.fastpath import Forward, optimise_for_inference
from koa_core.model.inference import predict_dataset, resolve_device
from koa_core.model.network import GraderNet
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
        tta: test-time augmentation (``KOA_SCORING_TTA``): shifts and zooms, never a flip.

    Returns:
        ``rows`` extended with ``p_kl0``..``p_kl4``, ``kl_grade`` and ``p_koa``.
    """
    if not rows:
        return []
    model, card = loaded_model(model_dir, device)
    stack = np.load(array_path, mmap_mode="r")
    indices = [int(row["array_index"]) for row in rows]
    images = torch.from_numpy(np.ascontiguousarray(stack[indices]))
    probabilities = predict_dataset(
        model, card, images, batch_size, device, forward=fast_forward(model_dir, device), tta=tta
    )
    scored = []
    for row, probs, koa in zip(rows, probabilities, p_koa(probabilities), strict=True):
        values = {name: float(p) for name, p in zip(PROBABILITY_COLUMNS, probs, strict=True)}
        grade = int(np.argmax(probs))
        scored.append({**row, **values, "kl_grade": grade, "p_koa": float(koa)})
    return scored
