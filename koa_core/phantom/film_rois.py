"""Knee ROIs cut from whole phantom films, written as a KL image-folder training set.

The grader scores knees cut from whole films (``koa_core.imaging.roi``), so it should train on
knees cut the same way: each ROI is the ``roi_mm`` square around a film's true joint, moved
by a small random offset that stands for the localizer's error, resized and windowed as
``roi_input`` does. Like the public KL crops, left knees are written as they lie on the film
(not mirrored): the ``laterality`` text chunk says the side and ``load_model_input`` mirrors
it on read. The ``pixel_spacing_mm`` chunk is ``roi_mm / size``, so the reader takes the
whole image as the knee's ROI.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from koa_core.config import get_settings
from koa_core.imaging.roi import roi_box, roi_input
from koa_core.io.model_input import to_uint8
from koa_core.phantom.anatomy import rng_for
from koa_core.phantom.film_writers import FILM_MIX, _choose
from koa_core.phantom.films import Film, FilmKnee, render_film
from koa_core.phantom.parallel import map_in_order
from koa_core.phantom.writers import PhantomRecord, assign_splits, write_labels

JITTER_CLIP = 2.5
"""Offsets are drawn per axis from a normal of sd ``jitter_mm`` and clipped at this many sd."""
_JITTER_STREAM = 3

Progress = Callable[[int], None]


def film_roi_pixels(
    film: Film,
    knee: FilmKnee,
    size: int,
    *,
    offset_mm: tuple[float, float] = (0.0, 0.0),
    roi_mm: float | None = None,
) -> npt.NDArray[np.uint8]:
    """One knee's ROI on ``film`` as 8-bit grey levels, not mirrored.

    Args:
        film: a rendered film.
        knee: one of ``film.knees``.
        size: side of the output in pixels.
        offset_mm: (x, y) shift of the ROI centre from the true joint, in mm.
        roi_mm: side of the square (default ``Settings().roi_mm``).
    """
    roi_mm = get_settings().roi_mm if roi_mm is None else roi_mm
    centre_x = knee.joint_x + offset_mm[0] / film.spacing_mm
    centre_y = knee.joint_y + offset_mm[1] / film.spacing_mm
    box = roi_box(centre_x, centre_y, film.spacing_mm, roi_mm)
    return to_uint8(roi_input(film.bone_bright(), box, size, mirror=False).pixels)


def _png_info(knee: FilmKnee, spacing_mm: float) -> PngInfo:
    info = PngInfo()
    info.add_text("laterality", knee.side)
    info.add_text("kl_grade", str(knee.label))
    info.add_text("pixel_spacing_mm", repr(spacing_mm))
    return info


def roi_offsets_mm(
    seed: int, index: int, count: int, jitter_mm: float
) -> list[tuple[float, float]]:
    """Each of film ``index``'s knees' (x, y) ROI offset in mm, from ``(seed, index)`` only.

    Per axis a normal of sd ``jitter_mm`` clipped at ``JITTER_CLIP`` sd: a localizer is
    mostly a few mm off and never far.
    """
    draws = rng_for(seed, index, _JITTER_STREAM).normal(0.0, 1.0, (count, 2))
    draws = np.clip(draws, -JITTER_CLIP, JITTER_CLIP) * jitter_mm
    return [(float(x), float(y)) for x, y in draws]


def training_film(seed: int, index: int, *, spacing_mm: float, label_noise: float = 0.0) -> Film:
    """Film ``index`` of a training set, its kind drawn from ``FILM_MIX``; pure in its arguments."""
    rng = rng_for(seed, index)
    kind = _choose(rng, FILM_MIX)
    return render_film(
        kind, int(rng.integers(2**62)), spacing_mm=spacing_mm, label_noise=label_noise
    )


def film_roi_files(
    out: Path,
    seed: int,
    index: int,
    split: str,
    *,
    label_noise: float = 0.0,
    size: int = 224,
    spacing_mm: float = 0.5,
    jitter_mm: float = 2.0,
) -> list[PhantomRecord]:
    """Render film ``index`` (kind from ``FILM_MIX``) and write each knee's ROI PNG.

    Files go to ``OUT/<split>/<label>/<index>_<side>.png``; a pure function of its
    arguments, so it can be mapped over chunks of indices in other processes.
    """
    film = training_film(seed, index, spacing_mm=spacing_mm, label_noise=label_noise)
    offsets = roi_offsets_mm(seed, index, len(film.knees), jitter_mm)
    roi_mm = get_settings().roi_mm
    records = []
    for knee, offset in zip(film.knees, offsets, strict=True):
        path = out / split / str(knee.label) / f"{index:06d}_{knee.side}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = film_roi_pixels(film, knee, size, offset_mm=offset, roi_mm=roi_mm)
        Image.fromarray(pixels).save(path, pnginfo=_png_info(knee, roi_mm / size))
        records.append(PhantomRecord(path, knee.label, knee.grade, knee.side, split))
    return records


def _film_rois(
    out: Path,
    seed: int,
    splits: tuple[str, ...],
    index: int,
    *,
    label_noise: float,
    size: int,
    spacing_mm: float,
    jitter_mm: float,
) -> list[PhantomRecord]:
    """Film ``index`` of ``write_film_kl_folders`` (module level, for worker processes)."""
    return film_roi_files(
        out,
        seed,
        index,
        splits[index],
        label_noise=label_noise,
        size=size,
        spacing_mm=spacing_mm,
        jitter_mm=jitter_mm,
    )


def write_film_kl_folders(
    out: Path,
    n_films: int,
    seed: int,
    *,
    label_noise: float = 0.0,
    size: int = 224,
    spacing_mm: float = 0.5,
    jitter_mm: float = 2.0,
    progress: Progress | None = None,
) -> list[PhantomRecord]:
    """Write the knees of ``n_films`` mixed films as ``OUT/{train,val,test}/{0..4}/`` PNGs.

    Films are split 70/15/15 (``assign_splits``), so both knees of a film share a split.
    Also writes ``OUT/labels.csv`` (with ``true_kl_grade`` when ``label_noise`` > 0).

    Args:
        out: output folder.
        n_films: number of films; about 1.6 knees each (``FILM_MIX``).
        seed: the same seed writes the same files.
        label_noise: chance that a knee's label is an adjacent grade.
        size: side of each PNG in pixels.
        spacing_mm: film pixel spacing; coarse is fine, as the ROI is resized anyway.
        jitter_mm: sd of each axis of the ROI centre's offset from the true joint.
        progress: called with 1 after each film.
    """
    render = partial(
        _film_rois,
        out,
        seed,
        tuple(assign_splits(n_films, seed)),
        label_noise=label_noise,
        size=size,
        spacing_mm=spacing_mm,
        jitter_mm=jitter_mm,
    )
    records = []
    for film_records in map_in_order(render, n_films):
        records += film_records
        if progress is not None:
            progress(1)
    write_labels(out / "labels.csv", records, out, with_true_grade=label_noise > 0)
    return records
