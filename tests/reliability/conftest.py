"""Fixtures of the reliability tests: a small night with a tiny champion model."""

from __future__ import annotations

from pathlib import Path

import pytest

from koa_core.config import get_settings
from tests.flows.models import register_tiny_champion
from tests.reliability.helpers import INPUT_SIZE, batch_folder, batch_inputs, write_replicated_batch


@pytest.fixture
def small_settings(koa_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """64 px model inputs, chunks of 4, and a registered tiny champion."""
    monkeypatch.setenv("KOA_INPUT_SIZE", str(INPUT_SIZE))
    monkeypatch.setenv("KOA_CHUNK_SIZE", "4")
    get_settings.cache_clear()
    register_tiny_champion(INPUT_SIZE)
    return koa_home


@pytest.fixture
def small_night(small_settings: Path) -> list[str]:
    """Ten valid images and two unreadable files; returns every input path."""
    folder = batch_folder()
    write_replicated_batch(folder, 10)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    return batch_inputs()


@pytest.fixture(autouse=True)
def _localizer(champion_localizer: str) -> str:
    """Every reliability night runs with the suite's tiny localizer as its champion."""
    return champion_localizer
