"""Tests for koa_core.model.checkpoint: atomic replacement and sha256-verified loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from koa_core.errors import CorruptCheckpointError
from koa_core.model.checkpoint import load_torch, save_torch, sidecar_path


def test_round_trip_with_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    digest = save_torch({"weights": torch.arange(5), "epoch": 3}, path)
    assert sidecar_path(path).read_text().split()[0] == digest
    loaded = load_torch(path)
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["weights"], torch.arange(5))


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_torch({"epoch": 1}, path)
    before = path.read_bytes()

    def disk_full(_descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_torch({"epoch": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]
    assert load_torch(path)["epoch"] == 1


def test_a_changed_file_fails_its_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_torch({"epoch": 1}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="does not match its sidecar"):
        load_torch(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CorruptCheckpointError, match="no such file"):
        load_torch(tmp_path / "nothing.pt")


def test_unsafe_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"callable": print}, path)  # no sidecar: only weights_only stands guard
    with pytest.raises(CorruptCheckpointError, match="not a readable torch file"):
        load_torch(path)
