"""Synthetic PA knee radiographs rendered in millimetres, with Kellgren-Lawrence features.

Geometry lives in an anatomical frame ``(u, v)`` in mm with its origin at the middle of
the joint space: ``u > 0`` is medial, ``v > 0`` is distal. A right knee is drawn as it is
displayed (fibula on the viewer's left); a left knee is its mirror image. Bones are soft
signed-distance shapes whose densities add up, like a projection; the acquisition then
adds blur, quantum noise, exposure, collimation and a burned-in L/R marker.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

GRADE_PROBABILITIES = (0.39, 0.18, 0.26, 0.13, 0.04)
"""KL 0..4 shares of the public knee datasets (OAI/MOST-derived image folders)."""

MAX_WORK_PX = 1024
"""Geometry is evaluated on a grid of at most this many pixels a side, then upsampled."""

PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
_COLLIMATED_ATTENUATION = 7.0
_NOISE_REFERENCE_MM = 0.15

FloatArray = npt.NDArray[np.float32]


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for ``(seed, *key)``; image ``i`` uses ``rng_for(seed, i)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def sample_grade(rng: np.random.Generator) -> int:
    """One KL grade drawn with the public datasets' distribution (``GRADE_PROBABILITIES``)."""
    return int(rng.choice(len(GRADE_PROBABILITIES), p=GRADE_PROBABILITIES))


def reader_label(grade: int, flip_probability: float, rng: np.random.Generator) -> int:
    """The grade a reader would record: with ``flip_probability`` an adjacent grade instead."""
    if rng.random() >= flip_probability:
        return grade
    if grade == 0:
        return 1
    if grade == len(GRADE_PROBABILITIES) - 1:
        return grade - 1
    return grade + (1 if rng.random() < 0.5 else -1)


@dataclass(frozen=True)
class Anatomy:
    """One patient's knee, in mm; ``size`` scales every bone dimension."""

    size: float
    jsw_medial_mm: float
    jsw_lateral_mm: float
    condyle_half_width_mm: float
    condyle_half_height_mm: float
    notch_gap_mm: float
    spine_height_mm: float
    bone_density: float
    soft_half_width_mm: float
    soft_attenuation: float


@dataclass(frozen=True)
class KLFeatures:
    """The radiographic features of one grade; ``severity`` is the grade plus jitter.

    ``osteophyte_mm`` are spur lengths at the (medial tibia, lateral tibia, medial femur,
    lateral femur) margins; ``sclerosis`` is extra subchondral density under the medial
    compartment (the lateral one gets 40 % of it); ``varus_deg`` tilts the tibia.
    """

    severity: float
    jsw_medial_mm: float
    jsw_lateral_mm: float
    osteophyte_mm: tuple[float, float, float, float]
    sclerosis: float
    varus_deg: float


@dataclass(frozen=True)
class Acquisition:
    """Nuisances of one exposure: positioning, optics, dose, processing, collimation."""

    rotation_deg: float
    magnification: float
    shift_mm: tuple[float, float]
    blur_mm: float
    noise: float
    window: tuple[float, float]
    gamma: float
    heel: float
    collimation_mm: tuple[float, float, float, float]
    marker_mm: float
    range_used: float


@dataclass(frozen=True)
class KneeImage:
    """A rendered radiograph: ``pixels`` are stored values as they go into (7FE0,0010)."""

    pixels: npt.NDArray[np.uint16]
    grade: int
    laterality: str
    spacing_mm: float
    bits_stored: int
    photometric: str
    anatomy: Anatomy
    acquisition: Acquisition
    features: KLFeatures
    osteophyte_area_mm2: float
    marker_box: tuple[int, int, int, int]
    """(row start, row stop, column start, column stop) of the marker; empty without one."""

    def bone_bright(self) -> FloatArray:
        """Pixels as float32 with bone bright (MONOCHROME1 inverted), as a reader returns them."""
        values = self.pixels.astype(np.float32)
        if self.photometric == "MONOCHROME1":
            return np.float32(2**self.bits_stored - 1) - values
        return values


@dataclass(frozen=True)
class Difficulty:
    """How hard a phantom set is to grade; the default changes nothing (same bytes).

    ``sign_scale`` multiplies every grade sign's departure from a healthy knee (spur
    length, narrowing, sclerosis, varus), ``severity_jitter`` is the +- spread of a grade's
    severity (above 0.5 neighbouring grades overlap), ``noise_scale`` and ``blur_scale``
    multiply the acquisition's quantum noise and blur, and ``label_noise`` is the share of
    adjacent-grade reader labels ``write_kl_folders`` writes in every split.
    """

    sign_scale: float = 1.0
    severity_jitter: float = 0.3
    noise_scale: float = 1.0
    blur_scale: float = 1.0
    label_noise: float = 0.0


DIFFICULTIES = {
    "normal": Difficulty(label_noise=0.10),
    "hard": Difficulty(0.7, 0.45, 1.8, 1.4, 0.12),
    "harder": Difficulty(0.55, 0.55, 2.5, 1.7, 0.15),
}
"""Named phantom sets of increasing difficulty (the benchmark's and ablations' sets)."""


def difficulty_named(name: str | Difficulty | None) -> Difficulty:
    """``DIFFICULTIES[name]``; a :class:`Difficulty` is returned as is, ``None`` is the default."""
    if name is None:
        return Difficulty()
    if isinstance(name, Difficulty):
        return name
    if name not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {name!r}")
    return DIFFICULTIES[name]


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random patient: body size, healthy joint-space widths, bone and soft tissue."""
    size = float(rng.uniform(0.88, 1.12))
    return Anatomy(
        size=size,
        jsw_medial_mm=float(np.clip(rng.normal(5.6, 0.35), 4.8, 6.4)) * size,
        jsw_lateral_mm=float(np.clip(rng.normal(6.6, 0.4), 5.8, 7.6)) * size,
        condyle_half_width_mm=float(rng.uniform(16.0, 18.0)) * size,
        condyle_half_height_mm=float(rng.uniform(19.0, 23.0)) * size,
        notch_gap_mm=float(rng.uniform(5.0, 6.5)) * size,
        spine_height_mm=float(rng.uniform(6.5, 9.0)) * size,
        bone_density=float(rng.uniform(0.85, 1.15)),
        soft_half_width_mm=float(rng.uniform(55.0, 78.0)) * size,
        soft_attenuation=float(rng.uniform(1.4, 2.1)),
    )


def _interp(severity: float, knots: tuple[float, ...], values: tuple[float, ...]) -> float:
    return float(np.interp(severity, knots, values))


_SEVERITY = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 4.3)


def kl_features(
    grade: int, anatomy: Anatomy, rng: np.random.Generator, difficulty: Difficulty | None = None
) -> KLFeatures:
    """Features of ``grade`` for this knee, monotone in a jittered severity.

    The default jitter (plus or minus 0.3 of a grade) keeps neighbouring grades from
    overlapping, so the grade stays learnable while the features still vary within a grade;
    a harder ``difficulty`` widens it and shrinks the signs (:func:`subtler`).
    """
    jitter = Difficulty().severity_jitter if difficulty is None else difficulty.severity_jitter
    severity = float(np.clip(grade + rng.uniform(-jitter, jitter), 0.0, 4.3))
    spur = _interp(severity, _SEVERITY, (0.0, 0.0, 2.0, 4.0, 6.0, 9.0, 10.0))
    # KL 1-2 spurs are medial; from KL 3 on they are multiple, in both compartments.
    lateral = _interp(severity, (0.0, 2.0, 3.0, 4.3), (0.0, 0.0, 0.7, 0.8))
    femoral = _interp(severity, (0.0, 1.5, 2.0, 4.3), (0.0, 0.0, 0.7, 0.9))
    medial_narrowing = _interp(severity, _SEVERITY, (1.0, 1.0, 0.88, 0.72, 0.45, 0.12, 0.06))
    lateral_narrowing = _interp(severity, _SEVERITY, (1.0, 1.0, 0.98, 0.95, 0.85, 0.68, 0.62))
    return KLFeatures(
        severity=severity,
        jsw_medial_mm=anatomy.jsw_medial_mm * medial_narrowing,
        jsw_lateral_mm=anatomy.jsw_lateral_mm * lateral_narrowing,
        osteophyte_mm=(spur, spur * lateral, spur * femoral, spur * lateral * femoral),
        sclerosis=_interp(severity, _SEVERITY, (0.0, 0.0, 0.0, 0.12, 0.45, 0.9, 1.0)),
        varus_deg=_interp(severity, (0.0, 2.0, 3.0, 4.0, 4.3), (0.0, 0.0, 1.5, 5.0, 6.0)),
    )


def subtler(features: KLFeatures, anatomy: Anatomy, scale: float) -> KLFeatures:
    """``features`` with every sign's departure from a healthy knee multiplied by ``scale``."""
    if scale == 1.0:
        return features
    return replace(
        features,
        jsw_medial_mm=anatomy.jsw_medial_mm
        - (anatomy.jsw_medial_mm - features.jsw_medial_mm) * scale,
        jsw_lateral_mm=anatomy.jsw_lateral_mm
        - (anatomy.jsw_lateral_mm - features.jsw_lateral_mm) * scale,
        osteophyte_mm=_four(np.asarray(features.osteophyte_mm) * scale),
        sclerosis=features.sclerosis * scale,
        varus_deg=features.varus_deg * scale,
    )


def noisier(acquisition: Acquisition, difficulty: Difficulty) -> Acquisition:
    """``acquisition`` with ``difficulty``'s extra quantum noise and blur."""
    if (difficulty.noise_scale, difficulty.blur_scale) == (1.0, 1.0):
        return acquisition
    return replace(
        acquisition,
        noise=acquisition.noise * difficulty.noise_scale,
        blur_mm=acquisition.blur_mm * difficulty.blur_scale,
    )


def _four(values: npt.NDArray[np.float64]) -> tuple[float, float, float, float]:
    left, right, top, bottom = (float(value) for value in values)
    return left, right, top, bottom


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """Random positioning, optics, dose and processing of one exposure."""
    return Acquisition(
        rotation_deg=float(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0)),
        magnification=float(rng.uniform(0.92, 1.10)),
        shift_mm=(
            float(np.clip(rng.normal(0.0, 4.0), -9, 9)),
            float(np.clip(rng.normal(0.0, 4.0), -9, 9)),
        ),
        blur_mm=float(rng.uniform(0.08, 0.35)),
        noise=float(rng.uniform(0.004, 0.014)),
        window=(float(rng.uniform(-0.4, 0.2)), float(rng.uniform(4.6, 6.0))),
        gamma=float(rng.uniform(0.75, 1.3)),
        heel=float(rng.uniform(-0.2, 0.2)),
        collimation_mm=_four(rng.uniform(80.0, 170.0, size=4)),
        marker_mm=float(rng.uniform(9.0, 13.0)),
        range_used=float(rng.uniform(0.7, 1.0)),
    )


def _f32(values: npt.ArrayLike) -> FloatArray:
    return np.asarray(values, dtype=np.float32)


def _edge(distance: FloatArray, width: float) -> FloatArray:
    """Soft inside indicator of a signed distance (positive inside), ramping over +-``width`` mm."""
    return _smoothstep(distance * np.float32(0.5 / width) + np.float32(0.5))


def _smin(a: FloatArray, b: FloatArray, k: float) -> FloatArray:
    """Polynomial smooth minimum: rounds the corner where two distance fields meet."""
    h = np.clip(0.5 + (b - a) * np.float32(0.5 / k), 0.0, 1.0)
    return _f32(b + (a - b) * h - np.float32(k) * h * (1.0 - h))


def _smax(a: FloatArray, b: FloatArray, k: float) -> FloatArray:
    return -_smin(-a, -b, k)


def _smoothstep(t: FloatArray) -> FloatArray:
    t = np.clip(t, np.float32(0.0), np.float32(1.0))
    return (t * t * (np.float32(3.0) - np.float32(2.0) * t)).astype(np.float32, copy=False)


def _ellipse(
    u: FloatArray, v: FloatArray, centre: tuple[float, float], axes: tuple[float, float]
) -> FloatArray:
    """Approximate signed distance (mm, positive inside) to an axis-aligned ellipse."""
    # Python floats keep the arithmetic in float32 (NumPy scalars would promote it).
    cu, cv, au, av = (float(x) for x in (*centre, *axes))
    du, dv = (u - cu) * np.float32(1.0 / au), (v - cv) * np.float32(1.0 / av)
    radius = np.sqrt(du * du + dv * dv)
    return _f32((1.0 - radius) * min(au, av))


def _spur(
    u: FloatArray, v: FloatArray, base: tuple[float, float], angle_deg: float, length: float
) -> FloatArray:
    """Signed distance of an osteophyte: a spur of ``length`` mm growing from ``base``."""
    direction = np.deg2rad(angle_deg)
    cos, sin = float(np.cos(direction)), float(np.sin(direction))
    du, dv = u - float(base[0]), v - float(base[1])
    # The spur's root reaches 2 mm into the bone so that it grows out of the cortex.
    half_length, half_width = length / 2 + 2.0, 0.3 * length + 0.8
    along = (du * cos + dv * sin - length / 2 + 1.2) * np.float32(1.0 / half_length)
    across = (dv * cos - du * sin) * np.float32(1.0 / half_width)
    # Narrower towards the tip, so a large spur looks like a beak, not a blob.
    across /= 1.0 - 0.45 * np.clip(along, 0.0, 1.0)
    return ((1.0 - np.sqrt(along * along + across * across)) * half_width).astype(np.float32)


def _window(
    u: FloatArray, v: FloatArray, centre: tuple[float, float], radius: float
) -> tuple[slice, slice]:
    """The array window holding the disc of ``radius`` mm around ``centre`` in (u, v).

    (u, v) are affine in the pixel indices, so the centre's pixel is one 2x2 solve away;
    local features (osteophytes) are then evaluated on a small window, not the whole grid.
    """
    jacobian = np.array(
        [[u[1, 0] - u[0, 0], u[0, 1] - u[0, 0]], [v[1, 0] - v[0, 0], v[0, 1] - v[0, 0]]],
        dtype=np.float64,
    )
    offset = np.array([centre[0] - u[0, 0], centre[1] - v[0, 0]], dtype=np.float64)
    row, column = np.linalg.solve(jacobian, offset)
    reach = radius / float(np.sqrt(abs(np.linalg.det(jacobian))))
    rows = slice(max(0, int(row - reach)), max(0, int(row + reach) + 2))
    columns = slice(max(0, int(column - reach)), max(0, int(column + reach) + 2))
    return rows, columns


def _bone(
    distance: FloatArray,
    trabecular: FloatArray | float,
    cortex_mm: FloatArray | float,
    density: float,
    texture: FloatArray,
) -> FloatArray:
    """Projected density of a bone: trabecular fill plus a bright cortical rim."""
    inside = np.maximum(distance, 0.0)
    rim = 1.1 * np.exp(-inside / cortex_mm)
    fill = trabecular * (1.0 + 0.18 * texture) + rim
    return (_edge(distance, 0.3) * np.float32(density) * fill).astype(np.float32)


def _add_spurs(
    distance: FloatArray,
    u: FloatArray,
    v: FloatArray,
    spurs: list[tuple[tuple[float, float], float, float]],
) -> tuple[FloatArray, float]:
    """Grow osteophytes ``(base, angle_deg, length)`` on a bone, in place.

    Returns the grown distance field and the osteophytes' area in pixels (where the bone
    grew); each spur is evaluated only on the window around it.
    """
    area = 0.0
    for base, angle, length in spurs:
        if length <= 0.0:
            continue
        window = _window(u, v, base, length + 3.0)
        local = distance[window]
        grown = _smax(local, _spur(u[window], v[window], base, angle, length), 1.2)
        area += float(np.clip(_edge(grown, 0.3) - _edge(local, 0.3), 0.0, 1.0).sum())
        distance[window] = grown
    return distance, area


def _femur(
    u: FloatArray, v: FloatArray, anatomy: Anatomy, features: KLFeatures, texture: FloatArray
) -> tuple[FloatArray, float]:
    """Distal femur: shaft, metaphyseal flare, two condyles and the intercondylar notch."""
    a, b, s = anatomy.condyle_half_width_mm, anatomy.condyle_half_height_mm, anatomy.size
    centre_u = a + anatomy.notch_gap_mm
    tilt = float(np.tan(np.deg2rad(features.varus_deg)))
    medial_v = centre_u * tilt - features.jsw_medial_mm - b
    lateral_v = -centre_u * tilt - features.jsw_lateral_mm - b
    medial = _ellipse(u, v, (centre_u, medial_v), (a, b))
    lateral = _ellipse(u, v, (-centre_u, lateral_v), (a, b))
    top = min(medial_v, lateral_v)
    shaft = 14.5 * s
    width = shaft + (centre_u + a - shaft) * _smoothstep((v - top + 60 * s) / (55 * s))
    notch = _ellipse(u, v, (0.0, top + 0.5 * b), (1.3 * anatomy.notch_gap_mm, 0.5 * b + 9 * s))
    flare = np.minimum(np.minimum(width - np.abs(u), top - v), -notch)
    distance = _smax(_smax(flare, medial, 1.0), lateral, 1.0)
    cos, sin = float(np.cos(np.deg2rad(40.0))), float(np.sin(np.deg2rad(40.0)))
    lengths = features.osteophyte_mm
    distance, osteophytes = _add_spurs(
        distance,
        u,
        v,
        [
            ((centre_u + a * cos, medial_v + b * sin), 25.0, lengths[2]),
            ((-centre_u - a * cos, lateral_v + b * sin), 155.0, lengths[3]),
        ],
    )
    in_shaft = _smoothstep((top - 25 * s - v) / (40 * s))
    density = _bone(
        distance, 1.0 - 0.7 * in_shaft, 1.1 + 2.4 * in_shaft, anatomy.bone_density, texture
    )
    depth = 3.0 + 5.0 * features.sclerosis
    sclerosis = np.exp(-np.abs(medial) / depth) * _edge(medial, 0.5) * _edge(
        v - medial_v, 3.0
    ) + 0.4 * np.exp(-np.abs(lateral) / depth) * _edge(lateral, 0.5) * _edge(v - lateral_v, 3.0)
    return density + np.float32(features.sclerosis) * sclerosis.astype(np.float32), osteophytes


def _tibia_frame(u: FloatArray, v: FloatArray, varus_deg: float) -> tuple[FloatArray, FloatArray]:
    """Coordinates of the tibia, tilted so that its medial plateau sinks with varus."""
    angle = np.deg2rad(varus_deg)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return u * cos + v * sin, -u * sin + v * cos


def _tibia(
    ut: FloatArray, vt: FloatArray, anatomy: Anatomy, features: KLFeatures, texture: FloatArray
) -> tuple[FloatArray, float]:
    """Proximal tibia: plateau with both compartments, tibial spines, metaphysis and shaft."""
    s = anatomy.size
    half_width = 1.03 * (2 * anatomy.condyle_half_width_mm + anatomy.notch_gap_mm)
    spine = anatomy.spine_height_mm * (1.0 + 0.06 * features.severity)
    spines = np.exp(-(((ut - 4.5 * s) / (2.4 * s)) ** 2)) + 0.85 * np.exp(
        -(((ut + 4.5 * s) / (2.4 * s)) ** 2)
    )
    rim = 2.5 * _smoothstep(_f32((np.abs(ut) - half_width + 7.0) / 7.0))
    below_plateau = (vt + spine * spines - rim).astype(np.float32)
    width = half_width - (half_width - 15.5 * s) * _smoothstep((vt - 12 * s) / (58 * s))
    distance = _smin(below_plateau, (width - np.abs(ut)).astype(np.float32), 3.0)
    lengths = features.osteophyte_mm
    distance, osteophytes = _add_spurs(
        distance,
        ut,
        vt,
        [
            ((half_width - 1.0, 3.0), -35.0, lengths[0]),
            ((1.0 - half_width, 3.0), 215.0, lengths[1]),
        ],
    )
    in_shaft = _smoothstep((vt - 20 * s) / (45 * s))
    density = _bone(
        distance, 0.95 - 0.65 * in_shaft, 0.9 + 2.4 * in_shaft, anatomy.bone_density, texture
    )
    depth = 3.0 + 5.0 * features.sclerosis
    compartments = _edge(ut - 6 * s, 2.0) + 0.4 * _edge(-ut - 6 * s, 2.0)
    sclerosis = (
        np.exp(-np.maximum(below_plateau, 0.0) / depth) * compartments * _edge(distance, 0.3)
    )
    return density + np.float32(features.sclerosis) * sclerosis.astype(np.float32), osteophytes


def _fibula(ut: FloatArray, vt: FloatArray, anatomy: Anatomy, texture: FloatArray) -> FloatArray:
    """Fibular head and neck, lateral and below the plateau, overlapping the tibia."""
    s = anatomy.size
    half_width = 1.03 * (2 * anatomy.condyle_half_width_mm + anatomy.notch_gap_mm)
    centre = (4.0 * s - half_width, 19.0 * s)
    head = _ellipse(ut, vt, centre, (9.0 * s, 8.5 * s))
    axis = centre[0] - 1.5 * s - 0.04 * (vt - centre[1])
    neck = np.minimum(5.0 * s - np.abs(ut - axis), vt - centre[1])
    return 0.8 * _bone(
        _smax(head, neck.astype(np.float32), 1.5), 0.75, 1.4, anatomy.bone_density, texture
    )


def _patella(u: FloatArray, v: FloatArray, anatomy: Anatomy, texture: FloatArray) -> FloatArray:
    """The patella's faint shadow over the distal femur (it lies in front of it)."""
    s = anatomy.size
    centre = (-2.5 * s, -(anatomy.jsw_medial_mm + anatomy.condyle_half_height_mm + 13.0 * s))
    distance = _ellipse(u, v, centre, (21.0 * s, 23.0 * s))
    body = np.sqrt(np.clip(distance / (6.0 * s), 0.0, 1.0)) * (1.0 + 0.15 * texture)
    return _f32(0.42 * anatomy.bone_density * _edge(distance, 1.0) * body)


def _soft_tissue(u: FloatArray, v: FloatArray, anatomy: Anatomy) -> FloatArray:
    """Skin-to-skin envelope of the leg, wider towards the thigh, with a denser core."""
    half_width = anatomy.soft_half_width_mm * (1.0 + 0.12 * np.clip(-v / 120.0, 0.0, 1.0))
    outer = np.sqrt(np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0))
    core = np.sqrt(np.clip(1.0 - (u / (0.7 * half_width)) ** 2, 0.0, 1.0))
    return _f32(anatomy.soft_attenuation * (outer + 0.35 * core))


def _texture(shape: tuple[int, int], work_mm: float, rng: np.random.Generator) -> FloatArray:
    """Trabecular texture: noise correlated over ~1 mm, longer along the bone axis."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    fine = ndimage.gaussian_filter(noise, (0.7 / work_mm, 0.35 / work_mm))
    # Subtracting the coarse part leaves a band-pass, net-like pattern instead of blotches.
    texture = fine - ndimage.gaussian_filter(fine, 2.0 / work_mm)
    return _f32(texture / max(float(texture.std()), 1e-6))


def _anatomical_frame(
    shape: tuple[int, int], work_mm: float, acquisition: Acquisition
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Image-plane y (mm from the centre) and the anatomical (u, v) of each work pixel."""
    ys = (np.arange(shape[0], dtype=np.float32) - (shape[0] - 1) / 2) * work_mm
    xs = (np.arange(shape[1], dtype=np.float32) - (shape[1] - 1) / 2) * work_mm
    dx = xs[None, :] - np.float32(acquisition.shift_mm[0])
    dy = ys[:, None] - np.float32(acquisition.shift_mm[1])
    angle = np.deg2rad(acquisition.rotation_deg)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    scale = np.float32(1.0 / acquisition.magnification)
    u = (dx * cos + dy * sin) * scale
    v = (dy * cos - dx * sin) * scale
    return np.broadcast_to(ys[:, None], shape), u, v


def _collimation(shape: tuple[int, int], work_mm: float, edges_mm: tuple[float, ...]) -> FloatArray:
    """Attenuation outside the collimated field: unexposed detector reads as dense."""
    ys = (np.arange(shape[0], dtype=np.float32) - (shape[0] - 1) / 2) * work_mm
    xs = (np.arange(shape[1], dtype=np.float32) - (shape[1] - 1) / 2) * work_mm
    left, right, top, bottom = edges_mm
    inside_x = np.minimum(xs + left, right - xs)
    inside_y = np.minimum(ys + top, bottom - ys)
    inside = np.minimum(inside_x[None, :], inside_y[:, None])
    return np.float32(_COLLIMATED_ATTENUATION) * (1.0 - _edge(inside, 0.4))


def _attenuation(
    shape: tuple[int, int],
    work_mm: float,
    anatomy: Anatomy,
    features: KLFeatures,
    acquisition: Acquisition,
    rng: np.random.Generator,
) -> tuple[FloatArray, float]:
    """Total attenuation (log units) on the work grid and the osteophyte area in mm^2."""
    y, u, v = _anatomical_frame(shape, work_mm, acquisition)
    texture = _texture(shape, work_mm, rng)
    total, spurs_px = leg_attenuation(u, v, anatomy, features, texture)
    total += _collimation(shape, work_mm, acquisition.collimation_mm)
    total += np.float32(acquisition.heel / 100.0) * y
    pixel_area = (work_mm / acquisition.magnification) ** 2
    return total.astype(np.float32), spurs_px * pixel_area


def leg_attenuation(
    u: FloatArray,
    v: FloatArray,
    anatomy: Anatomy,
    features: KLFeatures,
    texture: FloatArray,
    *,
    soft_tissue: bool = True,
) -> tuple[FloatArray, float]:
    """One right leg's projected attenuation (log units) at anatomical coordinates (u, v).

    ``u``, ``v`` (mm, affine in the pixel indices) and ``texture`` share one grid, which
    may be any window of an image: a whole film evaluates each leg on the band it covers.
    Soft tissue and shafts run on past the grid's edges; beyond the leg it is exactly 0.
    Without ``soft_tissue`` only the bones are drawn (``leg_soft_tissue`` is the rest; the
    bones' band is much narrower). Returns the attenuation and the osteophytes' area in
    grid pixels.
    """
    ut, vt = _tibia_frame(u, v, features.varus_deg)
    femur, femoral_spurs = _femur(u, v, anatomy, features, texture)
    tibia, tibial_spurs = _tibia(ut, vt, anatomy, features, texture)
    total = _soft_tissue(u, v, anatomy) + femur if soft_tissue else femur
    total = total + tibia + _fibula(ut, vt, anatomy, texture) + _patella(u, v, anatomy, texture)
    return total, femoral_spurs + tibial_spurs


def leg_soft_tissue(u: FloatArray, v: FloatArray, anatomy: Anatomy) -> FloatArray:
    """The leg's skin-to-skin soft tissue at (u, v); 0 where ``|u|`` exceeds
    ``soft_reach_mm(anatomy)``."""
    return _soft_tissue(u, v, anatomy)


def soft_reach_mm(anatomy: Anatomy) -> float:
    """Half-width (|u|, mm) outside which a leg has no soft tissue (the thigh's width)."""
    return anatomy.soft_half_width_mm * 1.12


def bone_reach_mm(anatomy: Anatomy) -> float:
    """Half-width (|u|, mm) outside which a leg has no bone, osteophytes included."""
    return 1.03 * (2 * anatomy.condyle_half_width_mm + anatomy.notch_gap_mm) + 14.0


def _resample(image: FloatArray, shape: tuple[int, int]) -> FloatArray:
    if image.shape == shape:
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    antialias = shape[0] < image.shape[0]
    resized = F.interpolate(tensor, size=shape, mode="bilinear", antialias=antialias)
    return resized[0, 0].numpy()


def _expose(
    attenuation: FloatArray, spacing_mm: float, acquisition: Acquisition, rng: np.random.Generator
) -> FloatArray:
    """Quantum noise (fewer photons behind bone), then the site's window and gamma: [0, 1]."""
    sigma = np.float32(acquisition.noise * _NOISE_REFERENCE_MM / spacing_mm)
    noise = rng.standard_normal(attenuation.shape, dtype=np.float32)
    noise *= sigma * np.exp(np.minimum(attenuation, 5.0) * np.float32(0.5))
    low, high = acquisition.window
    display = np.clip((attenuation + noise - np.float32(low)) / np.float32(high - low), 0.0, 1.0)
    return _f32(np.power(display, np.float32(acquisition.gamma)))


def _letter(letter: str, height_px: int) -> FloatArray:
    """A lead marker letter as a [0, 1] mask about ``height_px`` tall."""
    font = ImageFont.load_default(size=max(height_px, 4))
    canvas = Image.new("L", (2 * height_px + 8, 2 * height_px + 8))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), letter, fill=255, font=font)
    bbox = canvas.getbbox() or (0, 0, 1, 1)
    return np.asarray(canvas.crop(bbox), dtype=np.float32) / 255.0


def _burn_marker(
    display: FloatArray, laterality: str, spacing_mm: float, acquisition: Acquisition
) -> tuple[int, int, int, int]:
    """Burn the L/R letter into the upper lateral corner of the exposed field, in place."""
    mask = _letter(laterality, max(4, round(acquisition.marker_mm / spacing_mm)))
    rows, columns = display.shape
    lateral_edge = min(acquisition.collimation_mm[0], columns * spacing_mm / 2)
    top_edge = min(acquisition.collimation_mm[2], rows * spacing_mm / 2)
    inset = round(4.0 / spacing_mm)
    row = max(0, round(rows / 2 - top_edge / spacing_mm) + inset)
    column = max(0, round(columns / 2 - lateral_edge / spacing_mm) + inset)
    height, width = min(mask.shape[0], rows - row), min(mask.shape[1], columns - column)
    if laterality == "L":
        column = columns - column - width
    region = display[row : row + height, column : column + width]
    np.maximum(region, mask[:height, :width] * np.float32(0.97), out=region)
    return row, row + height, column, column + width


def _store(
    display: FloatArray, bits_stored: int, photometric: str, range_used: float
) -> npt.NDArray[np.uint16]:
    """Quantise [0, 1] to stored values; MONOCHROME1 stores bone dark."""
    top = 2**bits_stored - 1
    values = np.asarray(np.rint(display * np.float32(range_used * top)), dtype=np.uint16)
    if photometric == "MONOCHROME1":
        return np.asarray(top - values, dtype=np.uint16)
    return values


def render_knee(
    grade: int,
    laterality: str,
    seed: int,
    *,
    rows: int = 1024,
    columns: int = 1024,
    spacing_mm: float = 0.2,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    marker: bool = True,
    features: KLFeatures | None = None,
    difficulty: Difficulty | None = None,
) -> KneeImage:
    """Render one PA knee radiograph of KL ``grade``, deterministic in ``seed``.

    The patient, the acquisition and the grade's jitter are drawn from ``seed`` in that
    order, so the same seed with another grade shows the same knee at another stage, and
    the same seed with the other laterality gives the mirror image (marker aside).

    Args:
        grade: Kellgren-Lawrence grade 0-4.
        laterality: ``"R"`` or ``"L"``.
        seed: any non-negative integer.
        rows: image height in pixels.
        columns: image width in pixels.
        spacing_mm: pixel spacing (square pixels) at the detector.
        bits_stored: 12 or 16; stored values stay below ``2**bits_stored``.
        photometric: ``"MONOCHROME2"`` (bone bright) or ``"MONOCHROME1"`` (bone dark).
        marker: burn in the L/R letter; off for images cut to the model's field, where a
            full-size radiograph would not show it (it sits outside the central 150 mm).
        features: draw these KL features instead of ``grade``'s (e.g. a lone osteophyte);
            the patient and acquisition stay those of ``seed``.
        difficulty: subtler signs and a noisier acquisition (``None``: the default knee).
    """
    if grade not in range(len(GRADE_PROBABILITIES)):
        raise ValueError(f"KL grade must be 0-4, got {grade}")
    if laterality not in ("L", "R") or photometric not in PHOTOMETRICS:
        raise ValueError(f"bad laterality {laterality!r} or photometric {photometric!r}")
    if bits_stored not in (12, 16):
        raise ValueError(f"bits_stored must be 12 or 16, got {bits_stored}")
    rng = rng_for(seed)
    anatomy, acquisition = sample_anatomy(rng), sample_acquisition(rng)
    drawn = kl_features(grade, anatomy, rng, difficulty)
    if difficulty is not None:
        acquisition = noisier(acquisition, difficulty)
        drawn = subtler(drawn, anatomy, difficulty.sign_scale)
    # Drawn even when overridden, so the texture and noise draws that follow stay the same.
    features = drawn if features is None else features
    texture_rng, noise_rng = rng.spawn(2)
    work_mm = max(spacing_mm, max(rows, columns) * spacing_mm / MAX_WORK_PX)
    shape = (round(rows * spacing_mm / work_mm), round(columns * spacing_mm / work_mm))
    attenuation, area = _attenuation(shape, work_mm, anatomy, features, acquisition, texture_rng)
    attenuation = ndimage.gaussian_filter(attenuation, acquisition.blur_mm / work_mm)
    display = _expose(_resample(attenuation, (rows, columns)), spacing_mm, acquisition, noise_rng)
    if laterality == "L":
        display = np.ascontiguousarray(display[:, ::-1])
    marker_box = (
        _burn_marker(display, laterality, spacing_mm, acquisition) if marker else (0, 0, 0, 0)
    )
    return KneeImage(
        pixels=_store(display, bits_stored, photometric, acquisition.range_used),
        grade=grade,
        laterality=laterality,
        spacing_mm=spacing_mm,
        bits_stored=bits_stored,
        photometric=photometric,
        anatomy=anatomy,
        acquisition=acquisition,
        features=features,
        osteophyte_area_mm2=area,
        marker_box=marker_box,
    )
