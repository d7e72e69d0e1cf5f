"""Hard augmentation of whole films for localizer training, deterministic in its generator.

A site's films will not look like koa's phantoms, so each training sample is a new film:
a random similarity warp (scale, rotation, horizontal flip, crop) onto a fixed canvas, a
collimation rectangle that may cut one knee away entirely (never half a joint), burned-in
letters and bright metal, then contrast, gamma, inversion, blur and noise, and finally the
same percentile window inference applies. A flip mirrors the anatomy, so it flips the
handedness target too. A lateral view's joint is kept in view like a knee's, and never
collimated away; one labelled without its joint keeps its canvas near the film's centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from koa_core.imaging.transforms import clip_to_percentiles
from koa_core.localize.heatmap import KneeTarget

FloatImage = npt.NDArray[np.float32]
SCALE_RANGE = (0.7, 1.4)
MAX_ROTATION_DEG = 15.0
KEEP_MARGIN_MM = 50.0
"""Least distance from a kept joint centre to the canvas or collimation edge: enough to
keep the fibular head, which tells a right knee from a left one (and about what a
radiographer leaves around a joint)."""
DROP_MARGIN_MM = 45.0
"""Least distance a cut-away joint centre lies beyond the collimation edge: past its
condyles, so no half joint is left for the network to call a knee or not."""
LATERAL_JITTER = 0.1
"""Largest shift of a lateral view's canvas centre from the film's, as a share of the film."""
LETTERS = "LRAPST0123456789"
INVERT_PROBABILITY = 0.4
BLUR_MM = 3.0
"""Largest Gaussian blur sigma: a soft detector, or a film scanned out of focus."""


@dataclass(frozen=True)
class WorkFilm:
    """A training film at the work spacing, windowed to [0, 1], with its knees.

    ``knees`` are ``(x, y, right_looking)`` in work pixels (indices); a ``lateral`` view has
    none, but may have its ``lateral_joint`` (x, y).
    """

    pixels: FloatImage
    work_mm: float
    knees: tuple[tuple[float, float, bool], ...]
    lateral: bool = False
    lateral_joint: tuple[float, float] | None = None


@dataclass(frozen=True)
class Warp:
    """Canvas -> film map ``f = matrix @ (c - canvas_centre) + film_centre`` (continuous
    pixel coordinates, pixel centres at +0.5) and whether it mirrors."""

    matrix: npt.NDArray[np.float64]
    film_centre: npt.NDArray[np.float64]
    canvas_centre: float
    flipped: bool

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """A film pixel position (indices) on the canvas (indices)."""
        film = np.array([x + 0.5, y + 0.5]) - self.film_centre
        canvas = np.linalg.solve(self.matrix, film) + self.canvas_centre
        return float(canvas[0]) - 0.5, float(canvas[1]) - 0.5


def _random_warp(
    film: WorkFilm,
    canvas: int,
    mm_per_px: float,
    keep: Sequence[tuple[float, float]],
    rng: np.random.Generator,
) -> Warp:
    """A similarity warp that puts the ``keep`` joints at least ``KEEP_MARGIN_MM`` inside."""
    scale = math.exp(rng.uniform(*np.log(SCALE_RANGE)))
    angle = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    flipped = bool(rng.random() < 0.5)
    step = mm_per_px / scale / film.work_mm  # film pixels per canvas pixel
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = step * rotation @ np.diag([-1.0 if flipped else 1.0, 1.0])
    rows, columns = film.pixels.shape
    half = canvas / 2
    margin = KEEP_MARGIN_MM / mm_per_px
    kept = np.array([[x + 0.5, y + 0.5] for x, y in keep])
    if film.lateral and not keep:
        size = np.array([columns, rows], dtype=np.float64)
        centre = size / 2 + rng.uniform(-LATERAL_JITTER, LATERAL_JITTER, 2) * size
        return Warp(matrix, centre, half, flipped)
    for _ in range(20):
        centre = rng.uniform([0, 0], [columns, rows])
        if kept.size == 0:
            break
        # The kept knees on the canvas, relative to its centre.
        placed = np.linalg.solve(matrix, (kept - centre).T).T
        if np.all(np.abs(placed) <= half - margin):
            break
    else:
        # No random centre fits: centre the kept knees (they fit at any scale used here).
        centre = kept.mean(axis=0) if kept.size else centre
    return Warp(matrix, centre, half, flipped)


def _sample_grid(warp: Warp, canvas: int, shape: tuple[int, int]) -> torch.Tensor:
    """The (1, canvas, canvas, 2) ``grid_sample`` grid of ``warp`` for a film of ``shape``."""
    coords = torch.arange(canvas, dtype=torch.float64) + 0.5 - warp.canvas_centre
    cy, cx = torch.meshgrid(coords, coords, indexing="ij")
    matrix = torch.from_numpy(warp.matrix)
    fx = matrix[0, 0] * cx + matrix[0, 1] * cy + warp.film_centre[0]
    fy = matrix[1, 0] * cx + matrix[1, 1] * cy + warp.film_centre[1]
    rows, columns = shape
    # align_corners=False: -1 and 1 are the outer edges of the first and last pixels.
    grid = torch.stack((2 * fx / columns - 1, 2 * fy / rows - 1), dim=-1)
    return grid[None].float()


def _collimate(
    image: torch.Tensor,
    kept: Sequence[tuple[float, float]],
    dropped: Sequence[tuple[float, float]],
    mm_per_px: float,
    rng: np.random.Generator,
) -> bool:
    """Fill outside a random rectangle around the kept knees, cutting the dropped ones away
    whole; False (nothing done) when no such rectangle exists."""
    size = image.shape[-1]
    keep, drop = KEEP_MARGIN_MM / mm_per_px, DROP_MARGIN_MM / mm_per_px
    xs, ys = [x for x, _ in kept], [y for _, y in kept]
    reach = rng.uniform(keep, 3 * keep, 4)
    low_x = min(xs) - reach[0] if xs else rng.uniform(0, size / 2)
    high_x = max(xs) + reach[1] if xs else low_x + rng.uniform(keep, size / 2)
    low_y = min(ys) - reach[2] if ys else rng.uniform(0, size / 2)
    high_y = max(ys) + reach[3] if ys else low_y + rng.uniform(keep, size / 2)
    for x, _ in dropped:
        if xs and x > max(xs):
            high_x = min(high_x, x - drop)
        elif xs and x < min(xs):
            low_x = max(low_x, x + drop)
    if xs and (high_x < max(xs) + keep or low_x > min(xs) - keep):
        return False
    if dropped and any(low_x - drop < x < high_x + drop for x, _ in dropped):
        return False
    fill = float(rng.uniform(0.0, 1.0))
    columns = torch.arange(size)[None, :]
    rows = torch.arange(size)[:, None]
    outside = (columns < low_x) | (columns > high_x) | (rows < low_y) | (rows > high_y)
    image[0, 0][outside] = fill
    return True


@lru_cache(maxsize=64)
def _letter(letter: str, height: int) -> FloatImage:
    """A burned-in lead letter ``height`` pixels tall, as a [0, 1] mask."""
    font = ImageFont.load_default(size=max(height, 4))
    canvas = Image.new("L", (2 * height + 4, 2 * height + 4), 0)
    ImageDraw.Draw(canvas).text((2, 0), letter, fill=255, font=font)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        return np.ones((height, max(height // 2, 1)), np.float32)
    return np.ascontiguousarray(
        mask[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    )


def _far_from(knees: Sequence[tuple[float, float]], x: float, y: float, distance: float) -> bool:
    return all((x - kx) ** 2 + (y - ky) ** 2 >= distance**2 for kx, ky in knees)


def _burn_in(
    image: torch.Tensor,
    knees: Sequence[tuple[float, float]],
    mm_per_px: float,
    rng: np.random.Generator,
) -> None:
    """Letters and markers (bright or dark) and bright metal blobs, away from the joints."""
    size = image.shape[-1]
    pixels = image[0, 0]
    for _ in range(int(rng.integers(0, 4))):
        height = max(3, round(rng.uniform(6.0, 25.0) / mm_per_px))
        mask = torch.from_numpy(_letter(LETTERS[int(rng.integers(len(LETTERS)))], height))
        top, left = (int(v) for v in rng.integers(0, max(size - mask.shape[0], 1), 2))
        if not _far_from(
            knees, left + mask.shape[1] / 2, top + mask.shape[0] / 2, 20.0 / mm_per_px
        ):
            continue
        region = pixels[top : top + mask.shape[0], left : left + mask.shape[1]]
        value = 1.0 if rng.random() < 0.8 else 0.0
        region.mul_(1 - mask[: region.shape[0], : region.shape[1]]).add_(
            value * mask[: region.shape[0], : region.shape[1]]
        )
    if rng.random() < 0.3:
        coords = torch.arange(size, dtype=torch.float32)
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0, size, 2)
            if not _far_from(knees, cx, cy, 15.0 / mm_per_px):
                continue
            ax, ay = rng.uniform(2.0, 20.0, 2) / mm_per_px
            blob = ((coords[None, :] - cx) / ax) ** 2 + ((coords[:, None] - cy) / ay) ** 2 <= 1
            pixels[blob] = float(rng.uniform(1.0, 1.5))


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.3:
        return image
    radius = max(1, math.ceil(2.5 * sigma))
    taps = torch.exp(
        -(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2) / (2 * sigma**2)
    )
    taps /= taps.sum()
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, taps.view(1, 1, 1, -1))
    return F.conv2d(blurred, taps.view(1, 1, -1, 1))


def _intensity(image: torch.Tensor, mm_per_px: float, rng: np.random.Generator) -> torch.Tensor:
    """Contrast, brightness, gamma, inversion, a heel-effect ramp, blur and noise."""
    image = image.clamp(0.0, 1.5) / 1.5
    image = image ** float(math.exp(rng.uniform(-0.8, 0.8)))
    image = (image - 0.5) * float(rng.uniform(0.7, 1.4)) + 0.5 + float(rng.uniform(-0.2, 0.2))
    size = image.shape[-1]
    ramp = torch.linspace(-0.5, 0.5, size)
    slope = rng.uniform(-0.25, 0.25, 2)
    image = image + float(slope[0]) * ramp[None, :] + float(slope[1]) * ramp[:, None]
    # A reader that missed MONOCHROME1, or a site that inverts: a whole class of films.
    if rng.random() < INVERT_PROBABILITY:
        image = 1.0 - image
    image = _blur(image, float(rng.uniform(0.0, BLUR_MM)) / mm_per_px)
    noise = float(rng.uniform(0.0, 0.04))
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    return image + noise * torch.randn(image.shape, generator=generator)


def _choose_kept(count: int, rng: np.random.Generator) -> list[int]:
    if count == 2 and rng.random() < 0.4:
        return [int(rng.integers(2))]
    if rng.random() < 0.05:
        return []
    return list(range(count))


def augment_sample(
    film: WorkFilm, canvas: int, mm_per_px: float, rng: np.random.Generator, *, hard: bool = True
) -> tuple[FloatImage, list[KneeTarget], tuple[float, float] | None]:
    """One training canvas (``canvas`` square at ``mm_per_px``, windowed to [0, 1]), its
    knees and its side-view joint (lateral views). ``hard=False`` keeps only the geometric
    warp (no cut, no intensity changes)."""
    kept_ids = _choose_kept(len(film.knees), rng) if hard else list(range(len(film.knees)))
    side_view = [film.lateral_joint] if film.lateral_joint else []
    keep = [(film.knees[i][0], film.knees[i][1]) for i in kept_ids] + side_view
    warp = _random_warp(film, canvas, mm_per_px, keep, rng)
    source = torch.from_numpy(film.pixels)[None, None]
    grid = _sample_grid(warp, canvas, film.pixels.shape)
    image = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    placed = [warp.to_canvas(x, y) for x, y, _ in film.knees]
    inside = [i for i, (x, y) in enumerate(placed) if 0 <= x < canvas and 0 <= y < canvas]
    kept = [i for i in inside if i in kept_ids]
    dropped = [i for i in inside if i not in kept_ids]
    if hard and not film.lateral and (dropped or rng.random() < 0.5):
        if not _collimate(
            image, [placed[i] for i in kept], [placed[i] for i in dropped], mm_per_px, rng
        ):
            kept = inside
    else:
        kept = inside
    side_joint = warp.to_canvas(*film.lateral_joint) if film.lateral_joint else None
    if hard:
        joints = [placed[i] for i in kept] + ([side_joint] if side_joint else [])
        _burn_in(image, joints, mm_per_px, rng)
        image = _intensity(image, mm_per_px, rng)
    pixels = clip_to_percentiles(image[0, 0].numpy())
    targets = [
        KneeTarget(placed[i][0], placed[i][1], film.knees[i][2] != warp.flipped) for i in kept
    ]
    return pixels, targets, side_joint
