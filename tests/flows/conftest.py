"""Every flow test runs with the suite's tiny localizer as its champion: a night needs one."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _localizer(champion_localizer: str) -> str:
    return champion_localizer
