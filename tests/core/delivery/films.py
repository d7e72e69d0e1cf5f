"""Synthetic scored films for the delivery tests: a phantom DX header, knees, an overlay."""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import numpy as np
from pydicom.dataset import Dataset

from koa_core.delivery.findings import Algorithm, FilmFindings, KneeFinding
from koa_core.phantom.anatomy import KneeImage, render_knee
from koa_core.phantom.dicom import knee_dataset

STUDY_DATE = date(2026, 11, 27)
ALGORITHM = Algorithm(
    name="koa",
    version="0.1.0",
    model_version="v7",
    weights_sha256="a1" * 32,
    localizer_version="loc-2",
    localizer_sha256="b2" * 32,
)
FILM_PX = 320
SPACING_MM = 0.5


@lru_cache(maxsize=2)
def _image(side: str) -> KneeImage:
    return render_knee(2, side, 0, rows=FILM_PX, columns=FILM_PX, spacing_mm=SPACING_MM)


def film_header(index: int, side: str = "R") -> Dataset:
    """A DX knee film's dataset; UIDs and patient derive from ``index`` (pixels included)."""
    return knee_dataset(
        _image(side), key=("delivery", index), patient_id=f"KOA-D{index:03d}", study_date=STUDY_DATE
    )


def knee(side: str, grade: int, refer: bool = False, x: float = 80.0) -> KneeFinding:
    """A knee of ``grade``: its probabilities peak there; a referred knee's set has two grades."""
    probabilities = np.full(5, 0.05)
    probabilities[grade] = 0.8
    grade_set = (grade, min(grade + 1, 4)) if refer else (grade,)
    return KneeFinding(
        side=side,
        kl_grade=grade,
        probabilities=tuple(float(p) for p in probabilities),
        p_koa=float(probabilities[2:].sum()),
        grade_set=tuple(sorted(set(grade_set))),
        refer=refer,
        refer_reason="prediction set holds 2 grades" if refer and grade < 4 else None,
        joint_x=x,
        joint_y=150.0,
        roi_mm=60.0,
    )


def overlay(index: int, rows: int = FILM_PX, columns: int = FILM_PX) -> np.ndarray:
    """An RGB overlay whose pixels differ per film: smooth ramps and a box, as a JPEG of a
    picture keeps them within a grey level or two (noise would not survive it)."""
    y, x = np.mgrid[0:rows, 0:columns]
    picture = np.stack(
        [(x * 200) // columns + 5 * index, (y * 200) // rows, np.full_like(x, 37 * index)], axis=2
    )
    picture[rows // 4 : rows // 2, columns // 4 : columns // 2] = (0, 255, 0)
    return np.asarray(picture % 256, dtype=np.uint8)


def assert_shows_overlay(pixels: np.ndarray, expected: np.ndarray) -> None:
    """The SC's decoded pixels are the overlay, up to its JPEG's error."""
    assert pixels.shape == expected.shape
    error = np.abs(pixels.astype(np.int16) - expected.astype(np.int16))
    assert float(error.mean()) < 1.5, f"mean error {error.mean():.2f} grey levels"


def film(
    index: int,
    knees: tuple[KneeFinding, ...] | None = None,
    algorithm: Algorithm = ALGORITHM,
    header: Dataset | None = None,
) -> FilmFindings:
    """A scored film: two knees by default (right KL 1 referred, left KL 3)."""
    return FilmFindings(
        source=header if header is not None else film_header(index),
        knees=knees
        if knees is not None
        else (knee("R", 1, True, 80.0), knee("L", 3, False, 240.0)),
        algorithm=algorithm,
        overlay=overlay(index),
    )
