"""Scoring kernel: img/s of the default network per execution path, against the matmul roofline.

The roofline is a 4096 x 4096 matmul's GFLOP/s measured in the same process, divided by
the network's FLOPs per image (2 x ``count_macs``): the img/s the CPU would reach if every
convolution ran at matmul speed. ``ratio`` is measured img/s over that bound.

    .venv/bin/python benchmarks/kernel.py [--quick] [--compile]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from common import interleaved_seconds, machine, matmul_gflops, ratio, table  # isort: skip

from koa_core.model.card import ModelCard
from koa_core.model.fastpath import default_path, optimise_for_inference
from koa_core.model.inference import cpu_has_fast_bf16
from koa_core.model.network import build_model, count_macs

NO_BF16 = "n/a: no native bf16 on this CPU"


def run(quick: bool = False, compile_too: bool = False, threads: int = 2) -> dict[str, Any]:
    """Measure every path; returns the figures (img/s, roofline, ratios)."""
    torch.set_num_threads(threads)
    card = ModelCard()
    batch_size = 16 if quick else 32
    repeats = 5 if quick else 11
    model = build_model(card).eval()
    flops = 2 * count_macs(model, card.input_size)
    images = torch.randn(batch_size, 1, card.input_size, card.input_size)
    paths = ["eager", "channels_last", "fused"]
    if cpu_has_fast_bf16():
        paths.append("autocast")
    build_seconds: dict[str, float] = {}
    forwards = {}
    for path in [*paths, *(["compile"] if compile_too else [])]:
        start = time.perf_counter()
        forwards[path] = optimise_for_inference(model, card, "cpu", path)  # type: ignore[arg-type]
        build_seconds[path] = time.perf_counter() - start
    seconds = interleaved_seconds(
        {path: (lambda f=forward: f(images)) for path, forward in forwards.items()}, repeats
    )
    fp32_roof = matmul_gflops(torch.float32) * 1e9 / flops
    bf16_roof = matmul_gflops(torch.bfloat16) * 1e9 / flops if cpu_has_fast_bf16() else None
    chosen = default_path("cpu")
    rows, figures = [], {"flops_per_image": flops, "fp32_roofline_img_s": fp32_roof}
    eager = batch_size / seconds["eager"]
    for path, value in seconds.items():
        img_s = batch_size / value
        roof = bf16_roof if path in ("autocast",) and bf16_roof else fp32_roof
        mark = " (chosen)" if path == chosen else ""
        rows.append(
            [
                f"{path}{mark}",
                f"{img_s:.1f}",
                ratio(img_s, eager),
                f"{img_s / roof:.0%}",
                f"{build_seconds[path]:.1f}",
            ]
        )
        figures[f"{path}_img_s"] = img_s
        figures[f"{path}_roofline_ratio"] = img_s / roof
    if not cpu_has_fast_bf16():
        rows.append(["bf16 autocast", NO_BF16, "", "", ""])
    figures["table"] = table(
        f"Kernel: default network at {card.input_size} px, batch {batch_size}, "
        f"{threads} threads ({machine()})",
        ["path", "img/s", "vs eager", "of roofline", "build s"],
        rows,
    )
    roof_rows = [
        ["fp32 matmul 4096^2", f"{fp32_roof * flops / 1e9:.0f} GFLOP/s", f"{fp32_roof:.0f}"],
        [
            "bf16 matmul 4096^2",
            f"{bf16_roof * flops / 1e9:.0f} GFLOP/s" if bf16_roof else NO_BF16,
            f"{bf16_roof:.0f}" if bf16_roof else "",
        ],
    ]
    figures["roofline_table"] = table(
        f"Roofline ({flops / 1e9:.3f} GFLOP per image)",
        ["measure", "throughput", "roofline img/s"],
        roof_rows,
    )
    return figures


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batch, fewer repeats")
    parser.add_argument(
        "--compile", action="store_true", help="also torch.compile (40-90 s to compile here)"
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    run(args.quick, args.compile, args.threads)


if __name__ == "__main__":
    main()
