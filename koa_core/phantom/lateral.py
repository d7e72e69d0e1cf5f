"""A rough lateral knee silhouette: the view a PA grader must refuse (``not_frontal_view``).

The frame is ``(a, v)`` in mm with its origin at the joint space: ``a > 0`` anterior,
``v > 0`` distal. Only the silhouette matters (femur with its round condyles, tibial
plateau and tuberosity, patella in front, fibular head behind), not fine anatomy.
"""

from __future__ import annotations

import numpy as np

from koa_core.phantom.anatomy import (
    Anatomy,
    FloatArray,
    _bone,
    _ellipse,
    _smax,
    _smoothstep,
)


def _lateral_femur(a: FloatArray, v: FloatArray, anatomy: Anatomy) -> FloatArray:
    """Signed distance of the femur: shaft, flaring into condyles that overhang posteriorly."""
    s = anatomy.size
    condyles = _ellipse(a, v, (-6.0 * s, -anatomy.jsw_medial_mm - 22.0 * s), (29.0 * s, 22.0 * s))
    width = 14.0 * s + 10.0 * s * _smoothstep((v + 90.0 * s) / (60.0 * s))
    shaft = np.minimum(width - np.abs(a - 2.0 * s), -anatomy.jsw_medial_mm - 22.0 * s - v)
    return _smax(shaft.astype(np.float32), condyles, 4.0)


def _lateral_tibia(a: FloatArray, v: FloatArray, anatomy: Anatomy) -> FloatArray:
    """Signed distance of the tibia: a plateau sloping back, a tuberosity, a narrowing shaft."""
    s = anatomy.size
    plateau = v - 1.0 - 0.12 * a
    width = 27.0 * s - 12.0 * s * _smoothstep((v - 15.0 * s) / (50.0 * s))
    body = np.minimum(width - np.abs(a - 2.0 * s), plateau)
    tuberosity = _ellipse(a, v, (20.0 * s, 24.0 * s), (8.0 * s, 12.0 * s))
    return _smax(body.astype(np.float32), tuberosity, 3.0)


def lateral_attenuation(
    a: FloatArray, v: FloatArray, anatomy: Anatomy, texture: FloatArray
) -> FloatArray:
    """Projected attenuation (log units) of one knee seen from the side at ``(a, v)``."""
    s, density = anatomy.size, anatomy.bone_density
    half_width = 0.8 * anatomy.soft_half_width_mm * (1.0 + 0.2 * np.clip(-v / 150.0, 0.0, 1.0))
    soft = np.sqrt(np.clip(1.0 - ((a + 4.0 * s) / half_width) ** 2, 0.0, 1.0))
    femur = _bone(_lateral_femur(a, v, anatomy), 0.8, 2.5, density, texture)
    patella = _ellipse(a, v, (34.0 * s, -anatomy.jsw_medial_mm - 24.0 * s), (9.0 * s, 21.0 * s))
    fibula = _ellipse(a, v, (-19.0 * s, 19.0 * s), (8.0 * s, 8.0 * s))
    fibular_neck = np.minimum(5.0 * s - np.abs(a + 19.0 * s), v - 19.0 * s).astype(np.float32)
    total = (
        np.float32(anatomy.soft_attenuation * 1.3) * soft
        + femur
        + _bone(_lateral_tibia(a, v, anatomy), 0.8, 2.2, density, texture)
        + _bone(patella, 0.9, 1.5, density, texture)
        + 0.7 * _bone(_smax(fibula, fibular_neck, 1.5), 0.7, 1.4, density, texture)
    )
    return np.asarray(total, dtype=np.float32)
