"""Training step: img/s of one AdamW step of the default network, fp32 eager vs fast paths.

The fast path for training is channels_last (fp32 here); bf16 autocast is added only on
CPUs with native bf16, where it is worth it. ``torch.compile`` is left out: its 40-90 s
compile on this CPU costs more than it saves in a run of a few minutes.

    .venv/bin/python benchmarks/training.py [--quick]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import torch
from common import interleaved_seconds, machine, ratio, table
from torch import nn

from koa_core.model.card import ModelCard
from koa_core.model.inference import autocast, cpu_has_fast_bf16
from koa_core.model.network import build_model

CPU = torch.device("cpu")


def _step(memory_format: torch.memory_format, amp: bool, batch_size: int) -> Callable[[], None]:
    card = ModelCard()
    model = build_model(card).to(memory_format=memory_format).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 1, card.input_size, card.input_size)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, 5, (batch_size,))

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast(CPU, enabled=amp):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimiser.step()

    return step


def run(quick: bool = False, threads: int = 2) -> dict[str, Any]:
    """Interleaved timing of the training paths; the figures."""
    torch.set_num_threads(threads)
    batch_size = 16 if quick else 32
    paths = {
        "fp32 eager NCHW": _step(torch.contiguous_format, False, batch_size),
        "fp32 channels_last (chosen)": _step(torch.channels_last, False, batch_size),
    }
    if cpu_has_fast_bf16():
        paths["bf16 autocast channels_last"] = _step(torch.channels_last, True, batch_size)
    seconds = interleaved_seconds(paths, 3 if quick else 7)
    eager = batch_size / seconds["fp32 eager NCHW"]
    rows = [
        [name, f"{batch_size / s:.1f}", ratio(batch_size / s, eager)] for name, s in seconds.items()
    ]
    if not cpu_has_fast_bf16():
        rows.append(["bf16 autocast", "n/a: no native bf16 on this CPU", ""])
    figures: dict[str, Any] = {name: batch_size / s for name, s in seconds.items()}
    figures["table"] = table(
        f"Training step (AdamW), default network at 224 px, batch {batch_size}, "
        f"{threads} threads ({machine()})",
        ["path", "img/s", "vs fp32 eager"],
        rows,
    )
    return figures


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batch, fewer repeats")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    run(args.quick, args.threads)


if __name__ == "__main__":
    main()
