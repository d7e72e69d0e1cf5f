"""Whole synthetic knee films (bilateral or unilateral PA, or lateral) with each joint's truth.

A film is laid out in mm from its top-left corner. Each leg is ``anatomy.leg_attenuation``
evaluated on the band of the film it covers, at its own joint position and rotation; the
patient's left leg is the mirror image of the right. Legs, collimation, the heel effect and
any metal add up on one coarse work grid (at most ``MAX_WORK_PX`` a side), which is blurred,
upsampled, exposed and stored once, as ``render_knee`` does for one knee.

A standing bilateral PA shows the patient's right knee on the viewer's left, each fibula on
the outside and the medial sides facing each other; joint coordinates are in stored pixels
with the origin at the top-left pixel's centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from koa_core.errors import PhantomSpecError
from koa_core.phantom.anatomy import (
    _COLLIMATED_ATTENUATION,
    GRADE_PROBABILITIES,
    MAX_WORK_PX,
    PHOTOMETRICS,
    Acquisition,
    Anatomy,
    FloatArray,
    KLFeatures,
    _edge,
    _expose,
    _letter,
    _resample,
    _store,
    _texture,
    bone_reach_mm,
    kl_features,
    leg_attenuation,
    leg_soft_tissue,
    reader_label,
    rng_for,
    sample_acquisition,
    sample_anatomy,
    sample_grade,
    soft_reach_mm,
)
from koa_core.phantom.lateral import lateral_attenuation

FILM_KINDS = ("bilateral", "unilateral", "lateral")
BILATERAL_FIELDS_MM = ((350.0, 430.0), (430.0, 350.0), (430.0, 430.0))
"""Detector (width, height) of a standing bilateral PA: 35x43 cm either way up, or 43x43."""
UNILATERAL_FIELD_MM = ((160.0, 200.0), (300.0, 400.0))
"""Smallest and largest (width, height) of a one-knee field."""
DETECTOR_SPACINGS_MM = (0.1, 0.125, 0.139, 0.143, 0.148, 0.15, 0.16, 0.175, 0.2)
"""Pixel pitches of common DR detectors."""
JOINT_SEPARATION_MM = (150.0, 260.0)
LEG_ROTATION_DEG = 8.0
JOINT_CLEARANCE_MM = (65.0, 50.0, 75.0)
"""Least distance (sideways, above, below) from a joint centre to a film or collimator edge:
a knee film shows the whole joint and, below it, the fibular head and neck."""
COLLIMATION_PROBABILITY = 0.6
"""Chance that a given side of the film is collimated inside the detector."""
METAL_PROBABILITY = 0.15
_LABEL_STREAM = 1
_BLOCK_ROWS = 96


@dataclass(frozen=True)
class FilmKnee:
    """One knee on a film; ``joint_x``/``joint_y`` are the joint-space centre in stored pixels."""

    side: str
    joint_x: float
    joint_y: float
    grade: int
    label: int


@dataclass(frozen=True)
class Film:
    """A rendered film: ``pixels`` are stored values as they go into (7FE0,0010).

    ``markers`` holds each burned-in lead letter with its box (row start, row stop, column
    start, column stop) in stored pixels.
    """

    pixels: npt.NDArray[np.uint16]
    spacing_mm: float
    bits_stored: int
    photometric: str
    kind: str
    image_laterality: str
    knees: tuple[FilmKnee, ...]
    markers: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    metal: bool = False
    lateral_joint: tuple[float, float] | None = None
    """A lateral view's joint centre (column, row) in stored pixels: no knee to grade, but
    where a localizer learns what a side view looks like."""

    def bone_bright(self) -> FloatArray:
        """Pixels as float32 with bone bright (MONOCHROME1 inverted), as a reader returns them."""
        values = self.pixels.astype(np.float32)
        if self.photometric == "MONOCHROME1":
            return np.float32(2**self.bits_stored - 1) - values
        return values


@dataclass(frozen=True)
class _Leg:
    """Where one leg lies on the film: joint centre in mm from the top-left, rotation."""

    side: str
    x_mm: float
    y_mm: float
    rotation_deg: float


@dataclass(frozen=True)
class _Metal:
    """A bright rounded box (plate, nail or screw) in film mm."""

    x_mm: float
    y_mm: float
    angle_deg: float
    half_length_mm: float
    half_width_mm: float
    attenuation: float


@dataclass(frozen=True)
class _Layout:
    """Everything drawn about one film before any pixel is computed."""

    kind: str
    size_mm: tuple[float, float]
    spacing_mm: float
    bits_stored: int
    photometric: str
    anatomy: Anatomy
    acquisition: Acquisition
    legs: tuple[_Leg, ...]
    grades: tuple[int, ...]
    collimation_mm: tuple[float, float, float, float]
    metal: _Metal | None
    marker_at_top: bool
    both_markers: bool


@dataclass(frozen=True)
class _Grid:
    """The coarse work grid: pixel centres in film mm (x per column, y per row)."""

    xs: FloatArray
    ys: FloatArray
    work_mm: float


def _check(
    kind: str,
    grades: tuple[int, ...] | None,
    side: str | None,
    photometric: str | None,
    bits_stored: int | None,
) -> None:
    if kind not in FILM_KINDS:
        raise PhantomSpecError(f"film kind must be one of {FILM_KINDS}, got {kind!r}")
    if side not in (None, "R", "L") or (side is not None and kind == "bilateral"):
        raise PhantomSpecError(f"side must be 'R' or 'L' on a one-knee film, got {side!r}")
    if photometric not in (None, *PHOTOMETRICS) or bits_stored not in (None, 12, 16):
        raise PhantomSpecError(f"bad photometric {photometric!r} or bits {bits_stored!r}")
    if grades is None:
        return
    count = 2 if kind == "bilateral" else 1
    if len(grades) != count or any(g not in range(len(GRADE_PROBABILITIES)) for g in grades):
        raise PhantomSpecError(f"a {kind} film takes {count} KL grade(s) 0-4, got {grades}")


def _check_size(kind: str, size_mm: tuple[float, float] | None) -> None:
    """A field must hold its knees with ``JOINT_CLEARANCE_MM`` around each joint."""
    across, above, below = JOINT_CLEARANCE_MM
    least = 2 * across + (JOINT_SEPARATION_MM[0] if kind == "bilateral" else 0.0)
    if size_mm is not None and (size_mm[0] < least or size_mm[1] < above + below):
        raise PhantomSpecError(
            f"a {kind} film needs at least {least:g} x {above + below:g} mm, got {size_mm}"
        )


def _field_size(kind: str, rng: np.random.Generator) -> tuple[float, float]:
    """A detector field (width, height) in mm: a bilateral cassette or a one-knee field."""
    choice, jitter = int(rng.integers(len(BILATERAL_FIELDS_MM))), rng.uniform(-10.0, 0.0, 2)
    (low_w, low_h), (high_w, high_h) = UNILATERAL_FIELD_MM
    width = float(rng.uniform(low_w, high_w))
    height = float(rng.uniform(min(max(low_h, 1.25 * width), high_h), high_h))
    if kind == "bilateral":
        base_w, base_h = BILATERAL_FIELDS_MM[choice]
        return base_w + float(jitter[0]), base_h + float(jitter[1])
    return width, height


def _place_legs(
    kind: str, side: str, size: tuple[float, float], rng: np.random.Generator
) -> tuple[_Leg, ...]:
    """Joint centres anywhere that keeps ``JOINT_CLEARANCE_MM`` to the film edges.

    Both knees of a standing patient are at about the same height (a tilted pelvis
    puts one up to 10 mm higher); the pair is not centred on the film.
    """
    width, height = size
    across, above, below = JOINT_CLEARANCE_MM
    wanted, where = float(rng.uniform(*JOINT_SEPARATION_MM)), rng.random(2)
    rotations = rng.uniform(-LEG_ROTATION_DEG, LEG_ROTATION_DEG, 2)
    sag = float(np.clip(rng.normal(0.0, 4.0), -10.0, 10.0)) if kind == "bilateral" else 0.0
    separation = min(wanted, width - 2 * across) if kind == "bilateral" else 0.0
    left = across + float(where[0]) * max(width - 2 * across - separation, 0.0)
    top = above + abs(sag) / 2
    y = top + float(where[1]) * max(height - top - below - abs(sag) / 2, 0.0)
    if kind != "bilateral":
        return (_Leg(side, left, y, float(rotations[0])),)
    return (
        _Leg("R", left, y - sag / 2, float(rotations[0])),
        _Leg("L", left + separation, y + sag / 2, float(rotations[1])),
    )


def _collimation(
    size: tuple[float, float], legs: tuple[_Leg, ...], rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Field edges (left, right, top, bottom) in film mm, never nearer a joint than allowed.

    A side left open gets an edge past the film: the exposure runs to the detector edge.
    """
    width, height = size
    across, above, below = JOINT_CLEARANCE_MM
    room = (
        min(leg.x_mm for leg in legs) - across,
        width - max(leg.x_mm for leg in legs) - across,
        min(leg.y_mm for leg in legs) - above,
        height - max(leg.y_mm for leg in legs) - below,
    )
    closed, depth = rng.random(4) < COLLIMATION_PROBABILITY, rng.random(4)
    inset = [
        float(d) * max(r, 0.0) if c else -5.0 for c, d, r in zip(closed, depth, room, strict=True)
    ]
    return inset[0], width - inset[1], inset[2], height - inset[3]


def _sample_metal(
    legs: tuple[_Leg, ...], magnification: float, rng: np.random.Generator
) -> _Metal | None:
    """On some films a plate or a screw along one leg's shaft, well away from every joint."""
    present, index, plate = rng.random() < METAL_PROBABILITY, rng.integers(2), rng.random() < 0.6
    size = rng.uniform(0.0, 1.0, 5)
    length = 40.0 + 70.0 * size[0] if plate else 6.0 + 6.0 * size[0]
    width = 5.0 + 6.0 * size[1] if plate else 4.0 + 3.0 * size[1]
    along = JOINT_CLEARANCE_MM[2] + 10.0 + length / 2 + 40.0 * size[2]
    along *= 1.0 if rng.random() < 0.5 else -1.0
    off_axis, spin = 12.0 * size[3] - 6.0, 180.0 * size[4] - 90.0
    attenuation = float(rng.uniform(6.0, 9.0))
    if not present:
        return None
    leg = legs[int(index) % len(legs)]
    angle = math.radians(leg.rotation_deg)
    u = (-off_axis if leg.side == "L" else off_axis) * magnification
    v = along * magnification
    x = leg.x_mm + u * math.cos(angle) - v * math.sin(angle)
    y = leg.y_mm + u * math.sin(angle) + v * math.cos(angle)
    axis = 90.0 + leg.rotation_deg if plate else spin
    return _Metal(x, y, float(axis), float(length / 2), float(width / 2), attenuation)


def _layout(
    kind: str,
    rng: np.random.Generator,
    grades: tuple[int, ...] | None,
    side: str | None,
    size_mm: tuple[float, float] | None,
) -> _Layout:
    """Draw one film; every value is drawn even where the caller overrides it, so that an
    override (a coarser spacing for a test, say) leaves the rest of the film as it was."""
    size = _field_size(kind, rng)
    spacing = DETECTOR_SPACINGS_MM[int(rng.integers(len(DETECTOR_SPACINGS_MM)))]
    bits = 12 if rng.random() < 0.7 else 16
    photometric = "MONOCHROME1" if rng.random() < 0.25 else "MONOCHROME2"
    drawn_side = "L" if rng.random() < 0.5 else "R"
    anatomy, acquisition = sample_anatomy(rng), sample_acquisition(rng)
    drawn_grades = (sample_grade(rng), sample_grade(rng))
    size = size_mm or size
    legs = _place_legs(kind, side or drawn_side, size, rng)
    collimation = _collimation(size, legs, rng)
    metal = _sample_metal(legs, acquisition.magnification, rng)
    return _Layout(
        kind=kind,
        size_mm=size,
        spacing_mm=spacing,
        bits_stored=bits,
        photometric=photometric,
        anatomy=anatomy,
        acquisition=acquisition,
        legs=legs,
        grades=grades or drawn_grades[: len(legs)],
        collimation_mm=collimation,
        metal=None if kind == "lateral" else metal,
        marker_at_top=bool(rng.random() < 0.7),
        both_markers=bool(rng.random() < 0.5),
    )


def _grid(layout: _Layout, spacing_mm: float) -> tuple[_Grid, tuple[int, int]]:
    """The work grid of a film and the stored image's (rows, columns)."""
    width, height = layout.size_mm
    rows, columns = round(height / spacing_mm), round(width / spacing_mm)
    work_mm = max(spacing_mm, max(rows, columns) * spacing_mm / MAX_WORK_PX)
    shape = (
        max(2, round(rows * spacing_mm / work_mm)),
        max(2, round(columns * spacing_mm / work_mm)),
    )
    # Pixel centres in mm from the top-left corner: bilinear upsampling (half-pixel
    # centres) then puts stored pixel j's centre at (j + 0.5) * spacing, as on the grid.
    xs = (np.arange(shape[1], dtype=np.float32) + 0.5) * np.float32(columns * spacing_mm / shape[1])
    ys = (np.arange(shape[0], dtype=np.float32) + 0.5) * np.float32(rows * spacing_mm / shape[0])
    return _Grid(xs, ys, work_mm), (rows, columns)


def _columns(leg: _Leg, magnification: float, grid: _Grid, rows: slice, reach_mm: float) -> slice:
    """The work-grid columns where ``|u| <= reach_mm`` on ``rows``: outside, the term is 0."""
    angle = math.radians(leg.rotation_deg)
    half = reach_mm * magnification / math.cos(angle) + 2.0 * grid.work_mm
    lean = [math.tan(angle) * (float(grid.ys[r]) - leg.y_mm) for r in (rows.start, rows.stop - 1)]
    low, high = leg.x_mm - half - max(lean), leg.x_mm + half - min(lean)
    start, stop = (int(i) for i in np.searchsorted(grid.xs, [low, high]))
    start = min(start, grid.xs.size - 2)
    return slice(start, max(stop, start + 2))


def _row_blocks(count: int) -> list[slice]:
    """Blocks of work rows: each leg's band follows its axis block by block, so a tilted
    leg costs no more than an upright one (each block at least 2 rows for ``_window``)."""
    starts = list(range(0, count, _BLOCK_ROWS))
    if len(starts) > 1 and count - starts[-1] < 2:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], count], strict=True)]


def _leg_frame(
    leg: _Leg, magnification: float, xs: FloatArray, ys: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Anatomical (u, v) of a leg at film positions; the left leg is the right one mirrored."""
    angle = math.radians(leg.rotation_deg)
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    dx = xs[None, :] - np.float32(leg.x_mm)
    dy = ys[:, None] - np.float32(leg.y_mm)
    scale = np.float32((-1.0 if leg.side == "L" else 1.0) / magnification)
    u = (dx * cos + dy * sin) * scale
    v = (dy * cos - dx * sin) * np.float32(1.0 / magnification)
    return u, v


def _metal_attenuation(metal: _Metal, grid: _Grid) -> FloatArray:
    """A rounded box of metal: dense enough to saturate whatever lies behind it."""
    angle = math.radians(metal.angle_deg)
    dx = grid.xs[None, :] - np.float32(metal.x_mm)
    dy = grid.ys[:, None] - np.float32(metal.y_mm)
    along = dx * np.float32(math.cos(angle)) + dy * np.float32(math.sin(angle))
    across = dy * np.float32(math.cos(angle)) - dx * np.float32(math.sin(angle))
    inside = np.minimum(
        np.float32(metal.half_length_mm) - np.abs(along),
        np.float32(metal.half_width_mm) - np.abs(across),
    )
    return np.float32(metal.attenuation) * _edge(inside, 0.3)


def _collimator(grid: _Grid, edges: tuple[float, float, float, float]) -> FloatArray:
    """Attenuation outside the collimated field: unexposed detector reads as dense."""
    left, right, top, bottom = (np.float32(edge) for edge in edges)
    inside_x = np.minimum(grid.xs - left, right - grid.xs)
    inside_y = np.minimum(grid.ys - top, bottom - grid.ys)
    inside = np.minimum(inside_x[None, :], inside_y[:, None])
    return np.float32(_COLLIMATED_ATTENUATION) * (1.0 - _edge(inside, 0.4))


def _leg_on_grid(
    total: FloatArray,
    leg: _Leg,
    features: KLFeatures,
    layout: _Layout,
    grid: _Grid,
    texture: FloatArray,
) -> None:
    """Add one leg to ``total`` in place: soft tissue on its wide band, bones on a narrow one."""
    magnification, anatomy = layout.acquisition.magnification, layout.anatomy
    lateral = layout.kind == "lateral"
    for rows in _row_blocks(grid.ys.size):
        soft = _columns(leg, magnification, grid, rows, soft_reach_mm(anatomy) + 1.0)
        u, v = _leg_frame(leg, magnification, grid.xs[soft], grid.ys[rows])
        if lateral:
            total[rows, soft] += lateral_attenuation(u, v, anatomy, texture[rows, soft])
            continue
        total[rows, soft] += leg_soft_tissue(u, v, anatomy)
        bones = _columns(leg, magnification, grid, rows, bone_reach_mm(anatomy))
        u, v = _leg_frame(leg, magnification, grid.xs[bones], grid.ys[rows])
        density, _ = leg_attenuation(
            u, v, anatomy, features, texture[rows, bones], soft_tissue=False
        )
        total[rows, bones] += density


def _film_attenuation(
    layout: _Layout, grid: _Grid, features: list[KLFeatures], rng: np.random.Generator
) -> FloatArray:
    """Legs, collimation, heel effect and metal summed on the work grid (log units)."""
    shape = (grid.ys.size, grid.xs.size)
    texture = _texture(shape, grid.work_mm, rng)
    total = np.zeros(shape, dtype=np.float32)
    for leg, leg_features in zip(layout.legs, features, strict=True):
        _leg_on_grid(total, leg, leg_features, layout, grid, texture)
    total += _collimator(grid, layout.collimation_mm)
    centre = np.float32(0.5 * (grid.ys[0] + grid.ys[-1]))
    total += np.float32(layout.acquisition.heel / 100.0) * (grid.ys - centre)[:, None]
    if layout.metal is not None:
        total += _metal_attenuation(layout.metal, grid)
    return total


def _burn_markers(
    display: FloatArray, layout: _Layout, spacing_mm: float
) -> tuple[tuple[str, tuple[int, int, int, int]], ...]:
    """Burn lead letters into a top or bottom corner of the exposed field, in place.

    "R" goes on the viewer's left (the patient's right side of a PA film; a right knee's
    lateral side), "L" on the viewer's right; a bilateral film has "R" and often "L" too.
    """
    if layout.kind == "bilateral":
        letters = ("R", "L") if layout.both_markers else ("R",)
    else:
        letters = (layout.legs[0].side,)
    rows, columns = display.shape
    left, right, top, bottom = (edge / spacing_mm for edge in layout.collimation_mm)
    inset = round(5.0 / spacing_mm)
    mask_px = max(4, round(layout.acquisition.marker_mm / spacing_mm))
    boxes = []
    for letter in letters:
        mask = _letter(letter, mask_px)
        height, width = mask.shape
        row = (
            max(0, round(top)) + inset
            if layout.marker_at_top
            else min(rows, round(bottom)) - inset - height
        )
        column = (
            max(0, round(left)) + inset
            if letter == "R"
            else min(columns, round(right)) - inset - width
        )
        region = display[row : row + height, column : column + width]
        np.maximum(
            region, mask[: region.shape[0], : region.shape[1]] * np.float32(0.97), out=region
        )
        boxes.append((letter, (row, row + region.shape[0], column, column + region.shape[1])))
    return tuple(boxes)


def _film_knee(
    leg: _Leg, features: KLFeatures, layout: _Layout, spacing_mm: float, label: int
) -> FilmKnee:
    """A knee's truth: the middle of its joint space, in stored pixels.

    The leg's origin lies on the tibial plateau, under the femoral condyles; the middle of
    the space between them is half the mean joint-space width above it, along the leg.
    """
    above = 0.25 * (features.jsw_medial_mm + features.jsw_lateral_mm)
    above *= layout.acquisition.magnification
    angle = math.radians(leg.rotation_deg)
    x_mm = leg.x_mm + above * math.sin(angle)
    y_mm = leg.y_mm - above * math.cos(angle)
    grade = layout.grades[layout.legs.index(leg)]
    return FilmKnee(leg.side, x_mm / spacing_mm - 0.5, y_mm / spacing_mm - 0.5, grade, label)


def render_film(
    kind: str,
    seed: int,
    *,
    grades: tuple[int, ...] | None = None,
    side: str | None = None,
    spacing_mm: float | None = None,
    size_mm: tuple[float, float] | None = None,
    photometric: str | None = None,
    bits_stored: int | None = None,
    label_noise: float = 0.0,
) -> Film:
    """Render one whole film, deterministic in ``seed``; ``None`` arguments are drawn.

    Args:
        kind: ``"bilateral"`` (standing PA, both knees), ``"unilateral"`` (one PA knee,
            its joint anywhere in the field) or ``"lateral"`` (one knee from the side: no
            knee to grade).
        seed: any non-negative integer.
        grades: KL grades 0-4 rendered, ``(R, L)`` on a bilateral film; drawn with
            ``GRADE_PROBABILITIES`` when ``None``.
        side: the patient's side of a one-knee film, ``"R"`` or ``"L"``.
        spacing_mm: detector pixel spacing (drawn from ``DETECTOR_SPACINGS_MM``).
        size_mm: field (width, height) in mm.
        photometric: ``"MONOCHROME1"`` or ``"MONOCHROME2"``.
        bits_stored: 12 or 16.
        label_noise: chance that each knee's reader label is an adjacent grade.

    Raises:
        PhantomSpecError: an unknown kind, a side on a bilateral film, bad grades.
    """
    _check(kind, grades, side, photometric, bits_stored)
    _check_size(kind, size_mm)
    rng = rng_for(seed)
    layout = _layout(kind, rng, grades, side, size_mm)
    features = [kl_features(grade, layout.anatomy, rng) for grade in layout.grades]
    texture_rng, noise_rng = rng.spawn(2)
    spacing = spacing_mm or layout.spacing_mm
    grid, shape = _grid(layout, spacing)
    attenuation = _film_attenuation(layout, grid, features, texture_rng)
    attenuation = ndimage.gaussian_filter(attenuation, layout.acquisition.blur_mm / grid.work_mm)
    display = _expose(_resample(attenuation, shape), spacing, layout.acquisition, noise_rng)
    markers = _burn_markers(display, layout, spacing)
    bits, mono = bits_stored or layout.bits_stored, photometric or layout.photometric
    label_rng = rng_for(seed, _LABEL_STREAM)
    knees = tuple(
        _film_knee(leg, leg_features, layout, spacing, reader_label(grade, label_noise, label_rng))
        for leg, leg_features, grade in zip(layout.legs, features, layout.grades, strict=True)
    )
    return Film(
        pixels=_store(display, bits, mono, layout.acquisition.range_used),
        spacing_mm=spacing,
        bits_stored=bits,
        photometric=mono,
        kind=kind,
        image_laterality="B" if kind == "bilateral" else layout.legs[0].side,
        knees=() if kind == "lateral" else knees,
        markers=markers,
        metal=layout.metal is not None,
        lateral_joint=(knees[0].joint_x, knees[0].joint_y) if kind == "lateral" else None,
    )
