"""Training or a promotion in its own process, SIGKILLed at a chosen write (test-only wrappers).

``python -m tests.reliability.kill_process train DATA OUT KILL_AT_EPOCH``: trains
``TRAIN_CONFIG`` and dies while writing the checkpoint of epoch ``KILL_AT_EPOCH``, after
half of the new checkpoint reached its temporary file and before the rename.

``python -m tests.reliability.kill_process promote VERSION``: promotes ``VERSION`` over
the champion and dies after the new pointer's temporary file is written, before the rename.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from koa_core.model import checkpoint
from tests.core.kl_fixtures import TINY_CONFIG

TRAIN_CONFIG = replace(TINY_CONFIG, epochs=3)
_real_atomic_write = checkpoint.atomic_write_bytes


def _torn_write_then_die(path: Path, data: bytes) -> None:
    torn = path.with_name(f".{path.name}.torn")
    torn.write_bytes(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)


def train_and_die(data: Path, out: Path, kill_at_epoch: int) -> None:
    from koa_core.training.loop import train

    writes = {"n": 0}

    def write(path: Path, payload: bytes) -> None:
        if path.name == "checkpoint.pt":
            writes["n"] += 1
            if writes["n"] == kill_at_epoch:
                _torn_write_then_die(path, payload)
        _real_atomic_write(path, payload)

    checkpoint.atomic_write_bytes = write  # type: ignore[assignment]
    train(TRAIN_CONFIG, data, out)


def promote_and_die(version: str) -> None:
    from koa_core.registry import ModelRegistry, champion

    def write(path: Path, document: Mapping[str, Any]) -> None:
        _torn_write_then_die(path, json.dumps(document).encode())

    champion.atomic_write_json = write  # type: ignore[assignment]
    metrics = {"n_samples": 50, "per_class": [{"grade": g, "support": 10} for g in range(5)]}
    ModelRegistry().promote(
        version, {**metrics, "qwk": 0.7, "auc_koa": 0.8}, {**metrics, "qwk": 0.9, "auc_koa": 0.9}
    )


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train_and_die(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        promote_and_die(sys.argv[2])
