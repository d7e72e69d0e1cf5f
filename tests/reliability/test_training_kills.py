"""Training and promotion SIGKILLed mid-write: resume from a whole checkpoint, old champion kept."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from koa_core.model.checkpoint import load_torch
from koa_core.registry import ModelRegistry
from koa_core.training.loop import EpochStats, train
from tests.core.kl_fixtures import write_image_folder
from tests.flows.models import register_tiny_champion
from tests.reliability.helpers import REPO_ROOT
from tests.reliability.kill_process import TRAIN_CONFIG

pytestmark = pytest.mark.slow


def _killed(*args: str) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "tests.reliability.kill_process", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr


def test_training_killed_while_checkpointing_resumes_from_the_last_whole_one(
    tmp_path: Path,
) -> None:
    data = write_image_folder(tmp_path / "kl", {"train": 4, "val": 2})
    out = tmp_path / "killed"
    _killed("train", str(data), str(out), "2")
    # The torn epoch-2 checkpoint never replaced epoch 1's.
    assert (
        list(out.glob(".checkpoint.pt.torn"))
        and load_torch(out / "checkpoint.pt")["state"]["epoch"] == 1
    )
    resumed_epochs: list[EpochStats] = []
    resumed = train(TRAIN_CONFIG, data, out, resume=True, progress=resumed_epochs.append)
    assert [s.epoch for s in resumed_epochs] == [2, 3]
    straight = train(TRAIN_CONFIG, data, tmp_path / "straight")
    final_a, final_b = load_torch(straight.checkpoint_path), load_torch(resumed.checkpoint_path)
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name
    assert [s.val_qwk for s in straight.history] == [s.val_qwk for s in resumed.history]


def test_promotion_killed_half_way_keeps_the_old_champion(koa_home: Path, tmp_path: Path) -> None:
    register_tiny_champion(64, seed=1, workdir=tmp_path / "new")
    new = ModelRegistry().champion()
    assert new is not None
    register_tiny_champion(64, seed=0, workdir=tmp_path / "old")
    old = ModelRegistry().champion()
    audit = ModelRegistry().promotions()
    _killed("promote", new.version)
    registry = ModelRegistry()
    assert registry.champion() == old
    assert registry.get("champion").version == old.version
    # Nothing was logged: the decision line is appended only after the pointer moved.
    assert registry.promotions() == audit
    assert list(registry.root.glob(".champion.torn"))
