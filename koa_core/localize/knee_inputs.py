"""The one path from a film to the grader's inputs: decode, find the knees, side, ROI, 8-bit.

The nightly prepare step, training on labelled films and ``koa preview`` all call
``load_knee_inputs``, so the grader never sees a knee cut another way than the ones it was
trained on. Files that already are one knee's ROI (the public KL datasets' crops, koa's
KL-folder phantoms) are used as they are by ``koa_core.io.model_input.load_model_input``;
both cut the knee with the same transform (``koa_core.imaging.roi.roi_input``).

Coordinates reported (``joint_x``, ``joint_y``, ``box``) are in pixels of the stored image,
so they mean the same thing whether a JPEG 2000 file was decoded at full size or reduced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from koa_core.config import Settings, get_settings
from koa_core.errors import KneeTruncatedError, NotFrontalViewError
from koa_core.imaging.overlay import FilmPicture, film_picture
from koa_core.imaging.roi import off_film_share, roi_box, roi_input
from koa_core.io.model_input import to_uint8
from koa_core.io.reader import read_radiograph
from koa_core.io.record import ImageMetadata
from koa_core.localize.sides import Candidate, PlacedKnee, place_knees

ByteImage = npt.NDArray[np.uint8]


class FilmFindings(Protocol):
    """What a localizer saw on a film: its knees, best first, and the probability that the
    film is a lateral view (None when the localizer cannot tell)."""

    @property
    def knees(self) -> Sequence[Candidate]: ...
    @property
    def p_lateral(self) -> float | None: ...


KneeFinder = Callable[[npt.NDArray[np.float32], float], FilmFindings]
"""(bone-bright pixels, their spacing in mm) -> what the localizer found on them."""


@dataclass(frozen=True)
class KneeInput:
    """One knee's model input and where it came from on the film."""

    pixels: ByteImage
    side: str
    side_evidence: str
    joint_x: float
    joint_y: float
    roi_mm: float
    box: tuple[float, float, float, float]
    """(row start, row stop, column start, column stop) of the ROI in stored pixels."""
    localizer_score: float | None
    flipped: bool


@dataclass(frozen=True)
class FilmInputs:
    """A file's knees (patient's right first) and its header metadata.

    ``picture`` is the film as the overlay draws on it (scaled from stored pixels), when
    asked for: made from the pixels already decoded, it spares decoding the film again.
    """

    meta: ImageMetadata
    knees: tuple[KneeInput, ...]
    picture: FilmPicture | None = None


def decoded_spacing_mm(
    meta: ImageMetadata, shape: tuple[int, int], scale: int, settings: Settings
) -> float:
    """Pixel spacing of the decoded pixels: the header's times the decode scale, or for a
    raster that does not say, ``raster_field_mm`` across its longer side."""
    if meta.pixel_spacing_mm is not None:
        return meta.pixel_spacing_mm[0] * scale
    return settings.raster_field_mm / max(shape)


def _knee_input(
    pixels: npt.NDArray[np.float32],
    knee: PlacedKnee,
    spacing_mm: float,
    scale: int,
    size: int,
    roi_mm: float,
) -> tuple[KneeInput, float]:
    box = roi_box(knee.x, knee.y, spacing_mm, roi_mm)
    mirror = knee.side == "L"
    model_input = roi_input(pixels, box, size, mirror=mirror)
    knee_input = KneeInput(
        pixels=to_uint8(model_input.pixels),
        side=knee.side,
        side_evidence=knee.side_evidence,
        joint_x=knee.x * scale,
        joint_y=knee.y * scale,
        roi_mm=roi_mm,
        box=box.scaled(scale),
        localizer_score=knee.score,
        flipped=mirror,
    )
    return knee_input, off_film_share(box, pixels.shape)


def load_knee_inputs(
    path: Path,
    input_size: int,
    finder: KneeFinder,
    *,
    settings: Settings | None = None,
    picture: bool = False,
) -> FilmInputs:
    """Decode the film ``path`` and turn each of its knees into the grader's input.

    Args:
        path: A DICOM or raster file.
        input_size: The grader's input side in pixels.
        finder: The localizer (``koa_core.localize`` ``find_knees`` bound to a model).
        settings: ``roi_mm``, thresholds and limits; ``get_settings()`` when omitted.
        picture: also make the film's overlay picture (``FilmInputs.picture``).

    Raises:
        ImageReadError: the file cannot be decoded (a subclass names why).
        KneeLocalizationError: no gradable knee, a truncated one, a side in doubt, or a
            film the image shows to be a lateral view.
    """
    settings = settings or get_settings()
    radiograph = read_radiograph(path, target_size=input_size, settings=settings)
    meta, pixels = radiograph.meta, radiograph.pixels
    scale = radiograph.decode_scale
    spacing_mm = decoded_spacing_mm(meta, pixels.shape, scale, settings)
    findings = finder(pixels, spacing_mm)
    if findings.p_lateral is not None and findings.p_lateral >= settings.lateral_view_score:
        raise NotFrontalViewError(
            path,
            f"the image looks like a lateral view (localizer {findings.p_lateral:.2f}"
            f" >= KOA_LATERAL_VIEW_SCORE {settings.lateral_view_score:g})",
        )
    placed = place_knees(
        path,
        findings.knees,
        meta.laterality,
        min_score=settings.min_knee_score,
        confidence=settings.laterality_confidence,
    )
    knees = []
    for knee in placed:
        knee_input, share = _knee_input(
            pixels, knee, spacing_mm, scale, input_size, settings.roi_mm
        )
        if share > settings.max_roi_off_film:
            raise KneeTruncatedError(
                path, f"{share:.0%} of the {knee.side} knee's ROI lies off the film"
            )
        knees.append(knee_input)
    if not picture:
        return FilmInputs(meta, tuple(knees))
    drawn_on = film_picture(pixels)
    stored_scale = drawn_on.scale / scale  # boxes are in stored pixels, not decoded ones
    return FilmInputs(meta, tuple(knees), FilmPicture(drawn_on.grey, stored_scale))
