"""The trained tiny localizer on held-out phantom films, and ``find_knees``' contract."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from koa_core.io.reader import read_radiograph
from koa_core.localize.evaluate import match
from koa_core.localize.find import find_knees, load_localizer
from koa_core.localize.labels import LabelledFilm
from koa_core.localize.train import TrainedLocalizer, train_localizer
from tests.localizer_fixtures import TINY, FilmSet

MAX_ERROR_MM = 8.0
ACCEPT = 0.5
LATERAL = 0.5  # KOA_LATERAL_VIEW_SCORE's default


def _check_film(film: LabelledFilm, trained: TrainedLocalizer) -> None:
    radiograph = read_radiograph(film.path)
    found = [
        knee
        for knee in find_knees(radiograph.pixels, film.spacing_mm or 0.0, trained.localizer).knees
        if knee.score >= ACCEPT
    ]
    pairs = match(film.knees, found, film.spacing_mm or 0.0)
    assert len(found) == len(film.knees) == len(pairs), (film.relpath, found, film.knees)
    for truth, index, error_mm in pairs:
        assert error_mm <= MAX_ERROR_MM, (film.relpath, error_mm)
        right_looking = found[index].p_right_looking >= 0.5
        assert right_looking == (film.knees[truth].side == "R"), (film.relpath, found[index])


def test_both_knees_of_held_out_bilateral_films_are_found_with_their_handedness(
    tiny_localizer: TrainedLocalizer, held_out: FilmSet
) -> None:
    bilateral = [film for film in held_out.films if film.relpath.startswith("bilateral/")]
    assert bilateral and all(len(film.knees) == 2 for film in bilateral)
    for film in bilateral:
        _check_film(film, tiny_localizer)


def test_the_one_knee_of_held_out_unilateral_films_is_found_off_centre(
    tiny_localizer: TrainedLocalizer, held_out: FilmSet
) -> None:
    unilateral = [film for film in held_out.films if film.relpath.startswith("unilateral/")]
    assert {film.knees[0].side for film in unilateral} == {"R", "L"}
    # The joint is anywhere on these films, not at the centre the old crop assumed.
    off_centre = [
        math.hypot(f.knees[0].x - f.columns / 2, f.knees[0].y - f.rows / 2) * (f.spacing_mm or 0)
        for f in unilateral
    ]
    assert max(off_centre) > 30.0
    for film in unilateral:
        _check_film(film, tiny_localizer)


@pytest.mark.parametrize("kind", ["blank", "noise", "gradient"])
def test_no_knee_is_found_where_there_is_none(tiny_localizer: TrainedLocalizer, kind: str) -> None:
    rng = np.random.default_rng(0)
    shape = (600, 500)
    image = {
        "blank": np.full(shape, 1000.0),
        "noise": rng.normal(1000.0, 200.0, shape),
        "gradient": np.add.outer(np.linspace(0, 4000, shape[0]), np.linspace(0, 500, shape[1])),
    }[kind].astype(np.float32)
    found = find_knees(image, 0.7, tiny_localizer.localizer).knees
    assert all(knee.score < ACCEPT for knee in found), found


def test_positions_are_in_the_pixels_of_the_image_passed_in(
    tiny_localizer: TrainedLocalizer, held_out: FilmSet
) -> None:
    film = next(f for f in held_out.films if f.relpath.startswith("bilateral/"))
    pixels = read_radiograph(film.path).pixels
    spacing = film.spacing_mm or 0.0
    localizer = tiny_localizer.localizer
    full = find_knees(pixels, spacing, localizer).knees
    # Padded on the left and top: the same knees, shifted by the padding.
    padded = np.pad(pixels, ((90, 0), (120, 0)), mode="edge")
    shifted = find_knees(padded, spacing, localizer).knees
    # Half the resolution at twice the spacing: the same knees at half the coordinates.
    halved = find_knees(pixels[::2, ::2].copy(), 2 * spacing, localizer).knees
    for knee, moved, small in zip(full[:2], shifted[:2], halved[:2], strict=True):
        assert math.hypot(moved.x - 120 - knee.x, moved.y - 90 - knee.y) * spacing < 4.0
        assert math.hypot(2 * small.x + 0.5 - knee.x, 2 * small.y + 0.5 - knee.y) * spacing < 4.0


def test_a_saved_localizer_loads_once_and_finds_the_same_knees(
    tiny_localizer: TrainedLocalizer, held_out: FilmSet, tmp_path: Path
) -> None:
    saved = tiny_localizer.save(tmp_path / "run")
    loaded = load_localizer(saved)
    assert load_localizer(tmp_path / "run") is loaded
    assert loaded.card.weights_sha256 and loaded.card.metrics == tiny_localizer.card.metrics
    film = held_out.films[0]
    pixels = read_radiograph(film.path).pixels
    spacing = film.spacing_mm or 0.0
    assert find_knees(pixels, spacing, loaded) == find_knees(
        pixels, spacing, tiny_localizer.localizer
    )


def test_at_most_two_knees_best_first(tiny_localizer: TrainedLocalizer, held_out: FilmSet) -> None:
    film = next(f for f in held_out.films if f.relpath.startswith("bilateral/"))
    pixels = read_radiograph(film.path).pixels
    # Three copies of a bilateral film side by side: six knees, two returned.
    wide = np.concatenate([pixels] * 3, axis=1)
    found = find_knees(wide, film.spacing_mm or 0.0, tiny_localizer.localizer).knees
    assert len(found) == 2
    assert found[0].score >= found[1].score


@pytest.mark.parametrize(
    ("image", "spacing"), [(np.zeros((4, 4, 3), np.float32), 1.0), (np.zeros((64, 64)), 0.0)]
)
def test_bad_input_is_a_value_error(
    tiny_localizer: TrainedLocalizer, image: np.ndarray, spacing: float
) -> None:
    with pytest.raises(ValueError):
        find_knees(image, spacing, tiny_localizer.localizer)


def test_held_out_lateral_views_are_named_and_frontal_films_are_not(
    tiny_localizer: TrainedLocalizer, held_out: FilmSet
) -> None:
    seen = {
        film.relpath: find_knees(
            read_radiograph(film.path).pixels, film.spacing_mm or 0.0, tiny_localizer.localizer
        ).p_lateral
        for film in held_out.films
    }
    lateral = {film.relpath for film in held_out.films if film.lateral}
    assert lateral and all(path.startswith("lateral/") for path in lateral)
    assert all(p is not None and p >= LATERAL for path, p in seen.items() if path in lateral), seen
    assert all(p is not None and p < LATERAL for path, p in seen.items() if path not in lateral)


def test_a_localizer_without_a_view_head_still_finds_knees_and_cannot_tell_the_view(
    held_out: FilmSet, tmp_path: Path
) -> None:
    # A card written before the view head: same network, 4 output channels.
    config = replace(TINY, epochs=1, view_weight=0.0)
    films = [film for film in held_out.films if not film.lateral]
    trained = train_localizer(films, config)
    assert not trained.card.architecture.view_head
    loaded = load_localizer(trained.save(tmp_path / "old"))
    film = films[0]
    seen = find_knees(read_radiograph(film.path).pixels, film.spacing_mm or 0.0, loaded)
    assert seen.p_lateral is None
    assert trained.validation["lateral_flagged"] is None


def test_training_recorded_its_validation_figures(tiny_localizer: TrainedLocalizer) -> None:
    figures = tiny_localizer.validation
    assert figures["n_films"] >= 1 and figures["n_knees"] >= 1
    assert len(tiny_localizer.history) == tiny_localizer.card.hyperparameters["epochs"]
    assert tiny_localizer.card.data_fingerprint
