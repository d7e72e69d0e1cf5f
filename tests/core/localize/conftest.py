"""Localizer test fixtures: films held out from the suite's tiny localizer (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.localizer_fixtures import FilmSet, write_film_set


@pytest.fixture(scope="session")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> FilmSet:
    """Films from seeds never used in training."""
    return write_film_set(tmp_path_factory.mktemp("loc-held-out"), 4, 6, seed=900, lateral=4)
