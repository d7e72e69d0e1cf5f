"""Inference-only execution paths for the KL network: the fastest forward pass a device runs.

Measured on the project's 2-core AMD EPYC (AVX2 + FMA, no AVX-512-bf16/AMX), default
network, batch 32 at 224 px, fp32 (``benchmarks/kernel.py`` prints the current figures):
channels_last with BatchNorm folded into the convolutions (torch.fx) is ~1.3-1.7x eager
NCHW, as fast as a frozen TorchScript trace, and costs ~0.3 s per process to build;
``torch.compile`` with inductor freezing is about as fast again but takes 40-90 s per
process to compile (a warm cache still ~40 s), which a nightly run with a 20 s start-up
budget cannot pay on every Dask worker. bf16 autocast is several times *slower* than fp32
where the CPU emulates it, so it is used only on CPUs with native bf16 and on CUDA.

Every path optimises the grader's convolutional part (``feature_maps``) only and applies the
pooled linear head after it in fp32: that is the grader's own forward, and it hands the last
feature maps to the class-activation maps without a second pass over the knees.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from koa_core.model.card import ModelCard
from koa_core.model.inference import autocast, autocast_dtype, resolve_device
from koa_core.model.network import PooledGrader, place, reader_noise_logits

ExecutionPath = Literal["eager", "channels_last", "autocast", "fused", "compile"]
EXECUTION_PATHS: tuple[str, ...] = get_args(ExecutionPath)


class FeatureMaps(nn.Module):
    """A grader's convolutional part alone, as a module the fast paths can trace."""

    def __init__(self, grader: PooledGrader) -> None:
        super().__init__()
        self.grader = grader

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grader.feature_maps(x)


@dataclass(frozen=True)
class Forward:
    """A scoring forward: a normalised (N, 1, S, S) batch in, float32 (N, 5) logits out.

    ``with_maps`` also returns the last feature maps (float32, (N, C, h, w)) that the
    logits were pooled from, for class-activation maps at no extra pass. ``head`` is the
    grader's linear layer; ``reader_log_mixing`` its reader-noise layer, if it has one.
    """

    features: nn.Module
    head: nn.Linear
    device: torch.device
    memory_format: torch.memory_format
    use_autocast: bool
    reader_log_mixing: torch.Tensor | None = None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.with_maps(batch)[0]

    def with_maps(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, feature maps) of ``batch``."""
        batch = batch.to(self.device).contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            with autocast(self.device, enabled=self.use_autocast):
                maps = self.features(batch)
            maps = maps.float()
            logits: torch.Tensor = self.head(maps.mean(dim=(2, 3)))
            if self.reader_log_mixing is not None:
                logits = reader_noise_logits(logits, self.reader_log_mixing)
        return logits, maps


def default_path(device: str | torch.device = "auto") -> ExecutionPath:
    """The path ``optimise_for_inference`` takes on ``device`` when asked for ``"auto"``.

    CUDA and CPUs with native bf16 run autocast + channels_last; other CPUs run fp32,
    channels_last, with BatchNorm folded into the convolutions.
    """
    target = resolve_device(device)
    if autocast_dtype(target) is not None:
        return "autocast"
    return "fused" if target.type == "cpu" else "channels_last"


def inductor_cache_dir(home: Path | None = None) -> Path:
    """``$KOA_HOME/cache/inductor``: where ``torch.compile`` keeps kernels between runs."""
    if home is None:
        from koa_core.config import get_settings

        home = get_settings().home
    return home / "cache" / "inductor"


def optimise_for_inference(
    model: PooledGrader,
    card: ModelCard,
    device: str | torch.device = "auto",
    path: ExecutionPath | Literal["auto"] = "auto",
) -> Forward:
    """A forward function (normalised batch in, float32 logits out) for scoring only.

    ``model``'s weights are not changed (it is only placed on ``device`` in channels_last,
    as ``load_model`` leaves it). Build the forward once per loaded model, never inside a
    training loop: the fused and compiled paths capture the weights at the time of the call.

    Args:
        model: the trained network; put in eval mode here.
        card: its model card (the input size ``"compile"`` compiles for).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        path: ``"eager"`` fp32 NCHW (the reference), ``"channels_last"`` fp32,
            ``"autocast"`` channels_last at the device's autocast dtype, ``"fused"``
            fp32 channels_last with BatchNorm folded into the convolutions, ``"compile"``
            ``torch.compile`` with inductor freezing (autocast where worthwhile);
            ``"auto"`` is :func:`default_path`.

    Returns:
        A :class:`Forward` taking a (N, 1, S, S) float batch on ``device`` (any memory
        format).
    """
    target = resolve_device(device)
    chosen = default_path(target) if path == "auto" else path
    if chosen not in EXECUTION_PATHS:
        raise ValueError(f"unknown execution path {chosen!r}; choose from {EXECUTION_PATHS}")
    model.eval()
    # The head is copied so that the forward keeps the weights it was built with, as the
    # fused and compiled feature networks do.
    head = copy.deepcopy(model.fc).to(target)
    mixing = model.reader_log_mixing
    mixing = None if mixing is None else mixing.to(target)
    if chosen == "eager":
        reference = copy.deepcopy(model)
        # torch's stubs omit Module.to's memory_format keyword, which it does accept.
        reference.to(target, memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        return Forward(FeatureMaps(reference), head, target, torch.contiguous_format, False, mixing)
    features: nn.Module = FeatureMaps(place(model, target))
    if chosen == "fused":
        features = _folded(features)
    elif chosen == "compile":
        features = _compiled(features, card, target)
    return Forward(features, head, target, torch.channels_last, chosen != "fused", mixing)


def _folded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each BatchNorm folded into the convolution before it."""
    # torch.fx rather than torch.jit.trace + freeze: as fast here, and jit is deprecated.
    # The fx optimisation module imports torch.utils.mkldnn, whose TorchScript classes
    # (unused by ``fuse``) warn that jit is deprecated as they are defined.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
        from torch.fx.experimental import optimization
    folded: nn.Module = optimization.fuse(model, inplace=False)
    return folded


def _compiled(model: nn.Module, card: ModelCard, device: torch.device) -> nn.Module:
    """``torch.compile`` with weights frozen into the graph, compiled now, not on first use.

    Kernels are cached under ``$KOA_HOME/cache/inductor`` (unless ``TORCHINDUCTOR_CACHE_DIR``
    is set), so later processes on the same machine compile faster.
    """
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir()))
    compiled: nn.Module = torch.compile(model, options={"freezing": True})  # type: ignore[assignment]
    example = torch.zeros(2, 1, card.input_size, card.input_size, device=device)
    # A dynamic batch axis: chunks end with a short batch, which must not recompile.
    torch._dynamo.mark_dynamic(example, 0)
    with torch.inference_mode(), autocast(device):
        compiled(example.contiguous(memory_format=torch.channels_last))
    return compiled
