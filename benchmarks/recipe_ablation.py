"""Ablate koa's training recipe one change at a time against the reference CNN, per phantom set.

Each row is one run from the default ``TrainConfig()`` with one field changed, trained on
the same images as the reference, scored on the set's test split (another seed) with the
temperature fitted on validation. Rows are appended to a JSON-lines file as they finish,
so a partial run still leaves its figures. Synthetic phantoms only.

    nice -n 10 .venv/bin/python benchmarks/recipe_ablation.py --sets demo hard
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from common import machine
from recipe_sets import SetSize, reference_run, score, write_set

from koa_core.data.datasets import KLDataset, load_dataset
from koa_core.model.checkpoint import load_model
from koa_core.model.inference import predict_dataset, resolve_device
from koa_core.training.config import TrainConfig
from koa_core.training.loop import train

# The change each row makes to the default recipe, in the order that decides the default.
ABLATIONS: dict[str, dict[str, Any]] = {
    "default (fp32, no augmentation, no dropout, 16 epochs, last weights)": {},
    "dropout 0.2, 12 epochs (the default before 2026-12-01)": {"drop_rate": 0.2, "epochs": 12},
    "augmentation": {"augment": True},
    "augmentation x0.5": {"augment": True, "augment_strength": 0.5},
    "augmentation x1.5": {"augment": True, "augment_strength": 1.5},
    "dropout 0.2": {"drop_rate": 0.2},
    "weight decay 1e-2": {"weight_decay": 1e-2},
    "class-weighted CE": {"class_weighted": True},
    "keep EMA weights": {"keep": "ema"},
    "keep best-val weights": {"keep": "best"},
    "early stop (20 ep, patience 4, best)": {"epochs": 20, "patience": 4, "keep": "best"},
    "bf16 autocast": {"amp": True},
    "ordinal loss": {"loss": "ordinal"},
    "label smoothing 0.1": {"label_smoothing": 0.1},
    "adjacent smoothing 0.15": {"adjacent_smoothing": 0.15},
    "input 160 px": {"input_size": 160},
    "input 224 px": {"input_size": 224},
    "width 24": {"width": 24},
    "depth 1,1,1,1": {"depth": (1, 1, 1, 1)},
    "batch 64": {"batch_size": 64},
    "lr 5e-3": {"lr": 5e-3},
    "12 epochs": {"epochs": 12},
    "batch 16": {"batch_size": 16},
}


def koa_row(base: TrainConfig, change: dict[str, Any], data: Path, work: Path) -> dict[str, Any]:
    """Train ``base`` with ``change`` on the set at ``data``; test metrics and seconds."""
    config = replace(base, **change)
    dataset = load_dataset(data, config.input_size, cache_dir=work / "cache")
    started = time.perf_counter()
    result = train(config, dataset, work / "run")
    seconds = time.perf_counter() - started
    model = load_model(result.weights_path, result.card, resolve_device(config.device))
    test, val = dataset.splits["test"], dataset.splits["val"]
    test_probs = predict_dataset(model, result.card, test.images, 64, config.device)
    val_probs = predict_dataset(model, result.card, val.images, 64, config.device)
    row = score(dataset, test_probs, val_probs, result.card.architecture.reader_noise)
    return {**row, "seconds": seconds, "epochs_run": len(result.history)}


def reference_row(dataset: KLDataset, amp: bool) -> dict[str, Any]:
    """The reference CNN on the same set, scored the same way."""
    return {**reference_run(dataset, amp), "epochs_run": 12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["demo", "hard"])
    parser.add_argument("--reference-amp", action="store_true", help="bf16 for the reference.")
    parser.add_argument("--no-reference", action="store_true", help="Skip the reference.")
    parser.add_argument("--only", nargs="*", default=None, help="Ablation names to run.")
    parser.add_argument("--train", type=int, default=SetSize.train)
    parser.add_argument("--val", type=int, default=SetSize.val)
    parser.add_argument("--test", type=int, default=SetSize.test)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/koa-ablation"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ablation.jsonl"))
    args = parser.parse_args()
    size = SetSize(args.train, args.val, args.test)
    print(machine(), flush=True)
    base = TrainConfig(threads=torch.get_num_threads())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for number, name in enumerate(args.sets):
        seconds = write_set(args.work_dir / name, name, size, seed=100 + number)
        print(f"set {name}: written in {seconds:.0f} s", flush=True)
    names = [] if args.no_reference else ["reference"]
    names += args.only if args.only is not None else list(ABLATIONS)
    for ablation in names:
        for name in args.sets:
            data = args.work_dir / name
            if ablation == "reference":
                dataset = load_dataset(data, 128, cache_dir=args.work_dir / "cache")
                row = reference_row(dataset, args.reference_amp)
            else:
                row = koa_row(base, ABLATIONS[ablation], data, args.work_dir / f"{name}-run")
            row = {"set": name, "ablation": ablation, **row}
            print(json.dumps(row), flush=True)
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
