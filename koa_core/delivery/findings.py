"""What koa found on one film: the input contract of the DICOM results."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pydicom


@dataclass(frozen=True)
class KneeFinding:
    """One knee's result.

    Attributes:
        side: The patient's side, ``"R"`` or ``"L"``.
        kl_grade: Most probable Kellgren-Lawrence grade, 0-4.
        probabilities: P(KL = 0..4), five values.
        p_koa: P(KL >= 2).
        grade_set: The conformal prediction set (grades, ascending).
        refer: Whether a human should read this knee.
        refer_reason: Why (``None`` when not referred).
        joint_x: Joint centre, column in film pixels (0-based, as numpy indexes).
        joint_y: Joint centre, row in film pixels.
        roi_mm: Side of the square ROI the grade was read from, in mm.
    """

    side: str
    kl_grade: int
    probabilities: tuple[float, ...]
    p_koa: float
    grade_set: tuple[int, ...]
    refer: bool
    refer_reason: str | None
    joint_x: float
    joint_y: float
    roi_mm: float


@dataclass(frozen=True)
class Algorithm:
    """Which koa and which weights produced the findings."""

    name: str
    version: str  # koa's package version
    model_version: str
    weights_sha256: str
    localizer_version: str
    localizer_sha256: str


@dataclass(frozen=True)
class FilmFindings:
    """One scored film: its header, its knees, the algorithm and the overlay picture.

    Attributes:
        source: The film's header (a ``stop_before_pixels`` read is enough).
        knees: One finding per knee found.
        algorithm: The software and weights behind them.
        overlay: ``(rows, cols, 3)`` uint8 RGB picture of the film with boxes, heatmaps, text.
    """

    source: pydicom.Dataset
    knees: tuple[KneeFinding, ...]
    algorithm: Algorithm
    overlay: npt.NDArray[np.uint8]
