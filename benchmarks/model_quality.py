"""koa's default recipe against the reference CNN, trained in the same run, on phantom sets.

For each set of increasing difficulty (``demo``: the demo's own generator; ``normal``,
``hard``, ``harder``: ``koa_core.phantom.DIFFICULTIES``, adjacent-grade label noise in every
split) it trains ``TrainConfig()`` through koa's loop and the 40-line reference of issue 16
(``recipe_sets.ReferenceCNN``) on the same images, one after the other, and prints both
models' test QWK, accuracy, AUC(KL>=2), ECE after a temperature fitted on validation (with
its bootstrap 95 % interval), wall times, and the ratios. koa's model is also scored with
test-time augmentation (``predict_dataset(tta=True)``) for its cost and effect.

The reference trains in fp32 by default: on this CPU bf16 autocast is ~3x *slower* for a
network this narrow, so fp32 is the faster, stricter yardstick (``--reference-bf16`` runs
it as the issue wrote it). Synthetic phantoms only: nothing here is a figure on patients.

    nice -n 10 .venv/bin/python benchmarks/model_quality.py --sets demo normal hard harder
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

QWK_MARGIN = 0.01
TIME_RATIO = 1.5
ECE_TARGET = 0.03
SEEDS = {"demo": 100, "normal": 200, "hard": 101, "harder": 300}


def koa_run(dataset: KLDataset, work: Path, change: dict[str, Any]) -> dict[str, Any]:
    """Train the default recipe with ``change``; test metrics, with and without TTA, seconds."""
    config = replace(TrainConfig(threads=torch.get_num_threads()), **change)
    started = time.perf_counter()
    result = train(config, dataset, work)
    seconds = time.perf_counter() - started
    model = load_model(result.weights_path, result.card, resolve_device(config.device))
    test, val = dataset.splits["test"], dataset.splits["val"]
    figures: dict[str, Any] = {"seconds": seconds}
    for tta in (False, True):
        begun = time.perf_counter()
        probs = predict_dataset(model, result.card, test.images, 64, config.device, tta=tta)
        scoring_s = time.perf_counter() - begun
        val_probs = predict_dataset(model, result.card, val.images, 64, config.device, tta=tta)
        row = score(dataset, probs, val_probs, result.card.architecture.reader_noise)
        row["scoring_s"] = scoring_s
        figures["tta" if tta else "plain"] = row
    return figures


def verdict(koa: dict[str, Any], reference: dict[str, Any]) -> dict[str, bool]:
    """The issue's three tests on one set."""
    plain = koa["plain"]
    return {
        "qwk": plain["qwk"] >= reference["qwk"] - QWK_MARGIN,
        "time": koa["seconds"] <= TIME_RATIO * reference["seconds"],
        "ece": plain["ece_calibrated"] <= ECE_TARGET,
        "ece with grade noise": plain["ece_grade_noise"] <= ECE_TARGET,
    }


def print_tables(results: dict[str, dict[str, Any]]) -> None:
    head = "| set | QWK koa / ref | acc koa / ref | AUC koa / ref"
    print(f"{head} | ECE-T koa [95 % CI] / ref (floor) | train s koa / ref (ratio) | koa passes |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        k, ref = r["koa"]["plain"], r["reference"]
        low, high = k["ece_calibrated_ci"] or (float("nan"), float("nan"))
        ratio = r["koa"]["seconds"] / r["reference"]["seconds"]
        passed = ", ".join(f"{key} {'yes' if ok else 'NO'}" for key, ok in r["verdict"].items())
        print(
            f"| {name} | {k['qwk']:.3f} / {ref['qwk']:.3f} ({k['qwk'] - ref['qwk']:+.3f})"
            f" | {k['accuracy']:.3f} / {ref['accuracy']:.3f}"
            f" | {k['auc_koa']:.3f} / {ref['auc_koa']:.3f}"
            f" | {k['ece_calibrated']:.3f} [{low:.3f}, {high:.3f}] / {ref['ece_calibrated']:.3f}"
            f" ({k['ece_calibrated_floor']:.3f})"
            f" | {r['koa']['seconds']:.0f} / {ref['seconds']:.0f} ({ratio:.2f}x) | {passed} |"
        )
    print("\n| set | 90 % sets: coverage koa / ref | mean set size koa / ref", end="")
    print(" | ECE after T + grade noise koa [95 % CI] / ref (share koa / ref) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        k, ref = r["koa"]["plain"], r["reference"]
        low, high = k["ece_grade_noise_ci"] or (float("nan"), float("nan"))
        print(
            f"| {name} | {k['set_coverage']:.3f} / {ref['set_coverage']:.3f}"
            f" | {k['mean_set_size']:.2f} / {ref['mean_set_size']:.2f}"
            f" | {k['ece_grade_noise']:.3f} [{low:.3f}, {high:.3f}] / {ref['ece_grade_noise']:.3f}"
            f" ({k['grade_noise_share']:.2f} / {ref['grade_noise_share']:.2f}) |"
        )
    print(
        "\n| set | QWK plain / TTA | acc plain / TTA | ECE-T plain / TTA"
        " | ECE after T + grade noise plain / TTA | scoring s plain / TTA |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        p, t = r["koa"]["plain"], r["koa"]["tta"]
        print(
            f"| {name} | {p['qwk']:.3f} / {t['qwk']:.3f}"
            f" | {p['accuracy']:.3f} / {t['accuracy']:.3f}"
            f" | {p['ece_calibrated']:.3f} / {t['ece_calibrated']:.3f}"
            f" | {p['ece_grade_noise']:.3f} / {t['ece_grade_noise']:.3f}"
            f" | {p['scoring_s']:.2f} / {t['scoring_s']:.2f}"
            f" ({t['scoring_s'] / p['scoring_s']:.1f}x) |"
        )
    print("Synthetic phantoms: these figures say nothing about real patients.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["demo", "normal", "hard", "harder"])
    parser.add_argument("--train", type=int, default=SetSize.train)
    parser.add_argument("--val", type=int, default=SetSize.val)
    parser.add_argument("--test", type=int, default=SetSize.test)
    parser.add_argument(
        "--change",
        nargs="*",
        default=[],
        metavar="FIELD=JSON",
        help="TrainConfig fields to change from the default, e.g. drop_rate=0 epochs=16.",
    )
    parser.add_argument("--reference-bf16", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/koa-quality"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/model_quality.json"))
    args = parser.parse_args()
    size = SetSize(args.train, args.val, args.test)
    change = {key: json.loads(value) for key, value in (c.split("=", 1) for c in args.change)}
    print(machine(), change or "default recipe", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in args.sets:
        generation_s = write_set(args.work_dir / name, name, size, SEEDS[name])
        dataset = load_dataset(args.work_dir / name, TrainConfig().input_size)
        koa = koa_run(dataset, args.work_dir / f"{name}-koa", change)
        reference = reference_run(dataset, args.reference_bf16)
        results[name] = {
            "koa": koa,
            "reference": reference,
            "verdict": verdict(koa, reference),
            "generation_s": generation_s,
        }
        print(name, json.dumps(results[name], default=str), flush=True)
    print_tables(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = replace(TrainConfig(), **change).to_dict()
    setup = {**vars(args), "machine": machine(), "config": config}
    args.out.write_text(json.dumps({"setup": setup, "sets": results}, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
