"""Tests for koa_core.phantom.anatomy: determinism, KL features, mirroring, stored values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from koa_core.phantom.anatomy import (
    GRADE_PROBABILITIES,
    KneeImage,
    reader_label,
    render_knee,
    rng_for,
    sample_grade,
)

SMALL = {"rows": 320, "columns": 288, "spacing_mm": 0.8}


def _render(grade: int = 2, laterality: str = "R", seed: int = 0, **kwargs: object) -> KneeImage:
    return render_knee(grade, laterality, seed, **{**SMALL, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("grade", range(5))
def test_same_seed_same_pixels_other_seed_other_pixels(grade: int) -> None:
    first, again, other = _render(grade, seed=7), _render(grade, seed=7), _render(grade, seed=8)
    assert np.array_equal(first.pixels, again.pixels)
    assert not np.array_equal(first.pixels, other.pixels)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kl_features_are_monotone_in_grade(seed: int) -> None:
    images = [_render(grade, seed=seed) for grade in range(5)]
    medial = [image.features.jsw_medial_mm for image in images]
    lateral = [image.features.jsw_lateral_mm for image in images]
    area = [image.osteophyte_area_mm2 for image in images]
    sclerosis = [image.features.sclerosis for image in images]
    assert all(a > b for a, b in itertools.pairwise(medial))
    assert all(a >= b for a, b in itertools.pairwise(lateral))
    assert area[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(area))
    assert sclerosis[4] > sclerosis[3] > sclerosis[0] == 0.0
    # Narrowing is mostly medial in KL 4.
    assert medial[4] < 0.3 * medial[0] and lateral[4] > 0.5 * lateral[0]


def test_osteophytes_are_drawn_in_the_image() -> None:
    """The measured osteophyte area comes from the rendered masks, so bone must grow."""
    healthy, severe = _render(0, seed=5, spacing_mm=0.3), _render(4, seed=5, spacing_mm=0.3)
    assert severe.osteophyte_area_mm2 > 50.0
    assert not np.array_equal(healthy.pixels, severe.pixels)


@pytest.mark.parametrize("seed", [0, 11])
def test_left_knee_is_the_mirror_of_the_right_knee(seed: int) -> None:
    right, left = _render(seed=seed, laterality="R"), _render(seed=seed, laterality="L")
    mirrored = right.pixels[:, ::-1]
    outside = np.ones(left.pixels.shape, dtype=bool)
    r0, r1, c0, c1 = left.marker_box
    outside[r0:r1, c0:c1] = False
    r0, r1, c0, c1 = right.marker_box
    columns = right.pixels.shape[1]
    outside[r0:r1, columns - c1 : columns - c0] = False
    assert np.array_equal(left.pixels[outside], mirrored[outside])
    assert r1 > r0 and not np.array_equal(left.pixels, mirrored)


def test_marker_sits_on_the_lateral_side() -> None:
    columns = SMALL["columns"]
    assert _render(laterality="R").marker_box[3] <= columns // 2
    assert _render(laterality="L").marker_box[2] >= columns // 2


@pytest.mark.parametrize("bits", [12, 16])
def test_stored_values_fit_bits_and_photometric_inverts(bits: int) -> None:
    mono2 = _render(bits_stored=bits, photometric="MONOCHROME2")
    mono1 = _render(bits_stored=bits, photometric="MONOCHROME1")
    for image in (mono1, mono2):
        assert image.pixels.dtype == np.uint16
        assert int(image.pixels.max()) < 2**bits
        assert int(image.pixels.max()) > 2 ** (bits - 2)
    assert np.array_equal(mono1.bone_bright(), mono2.bone_bright())
    assert not np.array_equal(mono1.pixels, mono2.pixels)


@pytest.mark.parametrize("seed", [3, 4])
def test_bone_is_brighter_than_soft_tissue_brighter_than_air(seed: int) -> None:
    image = _render(seed=seed, rows=900, columns=900, spacing_mm=0.3, photometric="MONOCHROME1")
    anatomy, acquisition = image.anatomy, image.acquisition
    bright, spacing = image.bone_bright(), image.spacing_mm
    condyle_u = anatomy.condyle_half_width_mm + anatomy.notch_gap_mm
    condyle_v = -(anatomy.jsw_medial_mm + anatomy.condyle_half_height_mm)

    def sample(u_mm: float) -> float:
        x = acquisition.shift_mm[0] + u_mm * acquisition.magnification
        y = acquisition.shift_mm[1] + condyle_v * acquisition.magnification
        row, column = round(450 + y / spacing), round(450 + x / spacing)
        return float(np.median(bright[row - 4 : row + 5, column - 4 : column + 5]))

    edge_of_bone = 2 * anatomy.condyle_half_width_mm + anatomy.notch_gap_mm
    bone, soft = sample(condyle_u), sample(edge_of_bone + 5.0)
    air = sample(anatomy.soft_half_width_mm * 1.2 + 8.0)
    assert bone > soft > air


def test_grade_distribution_matches_public_datasets() -> None:
    rng = rng_for(123)
    n = 4000
    counts = np.bincount([sample_grade(rng) for _ in range(n)], minlength=5)
    expected = np.array(GRADE_PROBABILITIES) * n
    tolerance = 4 * np.sqrt(expected * (1 - np.array(GRADE_PROBABILITIES)))
    assert np.all(np.abs(counts - expected) < tolerance), counts


@pytest.mark.parametrize("rate", [0.0, 0.2])
def test_label_noise_flips_only_to_adjacent_grades(rate: float) -> None:
    rng = rng_for(9)
    truths = np.array([sample_grade(rng) for _ in range(5000)])
    labels = np.array([reader_label(int(t), rate, rng) for t in truths])
    differences = np.abs(labels - truths)
    assert set(np.unique(differences)) <= {0, 1}
    assert labels.min() >= 0 and labels.max() <= 4
    observed = float((differences == 1).mean())
    assert abs(observed - rate) < 4 * np.sqrt(max(rate, 1e-3) * (1 - rate) / len(truths))


@pytest.mark.parametrize(
    "kwargs",
    [{"grade": 5}, {"laterality": "B"}, {"bits_stored": 8}, {"photometric": "RGB"}],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"grade": 1, "laterality": "R", "seed": 0, **SMALL, **kwargs}
    with pytest.raises(ValueError):
        render_knee(**arguments)  # type: ignore[arg-type]


def test_overriding_features_with_the_drawn_ones_changes_nothing_and_a_spur_is_local() -> None:
    from dataclasses import replace

    from koa_core.phantom.anatomy import render_knee

    kwargs = {"rows": 200, "columns": 200, "spacing_mm": 0.75, "marker": False}
    drawn = render_knee(0, "R", 7, **kwargs)
    same = render_knee(0, "R", 7, features=drawn.features, **kwargs)
    assert (same.pixels == drawn.pixels).all()
    spur = replace(drawn.features, osteophyte_mm=(10.0, 0.0, 0.0, 0.0))
    spurred = render_knee(0, "R", 7, features=spur, **kwargs)
    changed = spurred.pixels.astype(int) != drawn.pixels.astype(int)
    assert spurred.osteophyte_area_mm2 > 0 == drawn.osteophyte_area_mm2
    # The medial tibial spur only changes pixels on the medial (right, for R) side.
    assert changed.any() and not changed[:, : kwargs["columns"] // 2].any()
