"""Small registered models for flow tests (the pipeline is under test here, not the model)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from koa_core.model.card import Architecture, ModelCard
from koa_core.model.checkpoint import save_torch
from koa_core.model.network import build_model
from koa_core.registry import ModelRegistry


def register_tiny_champion(input_size: int, seed: int = 0, workdir: Path | None = None) -> str:
    """Register an untrained tiny network as champion; return its version id."""
    from koa_core.config import get_settings

    torch.manual_seed(seed)
    card = ModelCard(input_size=input_size, architecture=Architecture(depth=(1, 1), width=8))
    source = workdir or get_settings().home / "tiny-model"
    source.mkdir(parents=True, exist_ok=True)
    save_torch(build_model(card).state_dict(), source / "weights.pt")
    (source / "card.json").write_text(json.dumps({"card": card.to_dict()}))
    registry = ModelRegistry()
    version = registry.register(source)
    registry.force_champion(version, reason="test fixture: an untrained network for the pipeline")
    return version.version
