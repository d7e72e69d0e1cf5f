"""Decode a chunk of a batch, find each film's knees, and write their ROIs to the run's scratch.

A chunk's knee inputs are stored as one uint8 ``.npy`` stack (the 8-bit grey levels the
public KL datasets and koa's training images use), written atomically so a chunk that is
computed twice (Dask recomputes results lost with a worker) leaves one complete file. Each
film gives one row per knee found on it, or one failure row saying why it gives none.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from koa_core.errors import ImageReadError, KneeLocalizationError
from koa_core.imaging.statistics import input_statistics
from koa_core.localize.knee_inputs import FilmInputs, KneeFinder, KneeInput, load_knee_inputs
from koa_core.pipeline.manifest import READ_ERROR_DETAIL, with_sha256
from koa_core.storage.files import atomic_write_bytes

# Quarantine stages of the failures ``prepare_chunk`` reports.
READ, LOCALIZE = "read", "localize"
# What decided body part or view when the header and descriptions could not.
LOCALIZER_EVIDENCE = "localizer"


@dataclass(frozen=True)
class PreparedChunk:
    """The result of preparing one chunk: where its knee inputs are, and what became of each file.

    ``rows`` hold one row per knee (manifest row + knee columns + input statistics), in
    the order of the array's first axis; ``failures`` are the files that gave no knee, with
    ``reasons``, ``read_error_detail`` and ``stage`` (``read`` or ``localize``).
    """

    array_path: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


@lru_cache(maxsize=2)
def knee_finder(localizer_dir: str) -> KneeFinder:
    """The localizer in ``localizer_dir`` as a ``KneeFinder``, loaded once per process."""
    from koa_core.localize.find import find_knees, load_localizer

    return partial(find_knees, localizer=load_localizer(Path(localizer_dir)))


def knee_evidence(row: dict[str, Any], knee: KneeInput) -> str:
    """``body_part=..;view=..;side=..``: what said knee, frontal, and which side."""
    body_part = row.get("body_part_evidence") or LOCALIZER_EVIDENCE
    view = row.get("view_evidence") or LOCALIZER_EVIDENCE
    return f"body_part={body_part};view={view};side={knee.side_evidence}"


def knee_rows(row: dict[str, Any], film: FilmInputs, first_index: int) -> list[dict[str, Any]]:
    """One row per knee of ``film``: the file's row, the knee, its input statistics."""
    rows = []
    for offset, knee in enumerate(film.knees):
        statistics = input_statistics(knee.pixels.astype(np.float32) / np.float32(255.0))
        rows.append(
            {
                **row,
                "array_index": first_index + offset,
                "knee_side": knee.side,
                "joint_x": knee.joint_x,
                "joint_y": knee.joint_y,
                "roi_mm": knee.roi_mm,
                "roi_box": knee.box,
                "localizer_score": knee.localizer_score,
                "knee_evidence": knee_evidence(row, knee),
                "flipped": knee.flipped,
                **statistics,
            }
        )
    return rows


def _failure(row: dict[str, Any], error: ImageReadError | KneeLocalizationError) -> dict[str, Any]:
    stage = READ if isinstance(error, ImageReadError) else LOCALIZE
    return {**row, "reasons": error.reason, READ_ERROR_DETAIL: error.detail, "stage": stage}


def prepare_chunk(
    rows: list[dict[str, Any]],
    scratch_dir: Path,
    chunk_id: int,
    input_size: int,
    localizer_dir: str,
    pictures: bool = False,
) -> PreparedChunk:
    """Hash, decode and localize every file of a chunk; save the knees as ``chunk-<id>.npy``.

    Rows without a ``sha256`` get one here, where the file is read in full anyway. With
    ``pictures``, each film's overlay picture is kept too, in ``chunk-<id>-pictures.npz``
    (its knees' rows say where: ``picture_path``, ``picture_key``, ``picture_scale``).
    """
    finder = knee_finder(localizer_dir)
    images: list[npt.NDArray[np.uint8]] = []
    drawn_on: dict[str, npt.NDArray[np.uint8]] = {}
    prepared, failures = [], []
    array_path = scratch_dir / f"chunk-{chunk_id:05d}.npy"
    pictures_path = scratch_dir / f"chunk-{chunk_id:05d}-pictures.npz"
    for row in with_sha256(rows):
        try:
            film = load_knee_inputs(Path(row["source_path"]), input_size, finder, picture=pictures)
        except (ImageReadError, KneeLocalizationError) as error:
            failures.append(_failure(row, error))
            continue
        knees = knee_rows(row, film, len(images))
        if film.picture is not None:
            key = str(len(drawn_on))
            drawn_on[key] = film.picture.grey
            located = {"picture_path": str(pictures_path), "picture_key": key}
            knees = [{**knee, **located, "picture_scale": film.picture.scale} for knee in knees]
        prepared += knees
        images += [knee.pixels for knee in film.knees]
    stack = np.stack(images) if images else np.zeros((0, input_size, input_size), np.uint8)
    save_array_atomically(array_path, stack)
    if drawn_on:
        _save_pictures(pictures_path, drawn_on)
    return PreparedChunk(array_path=str(array_path), rows=prepared, failures=failures)


def _save_pictures(path: Path, pictures: dict[str, npt.NDArray[np.uint8]]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **pictures)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def save_array_atomically(path: Path, array: npt.NDArray[Any]) -> None:
    """``np.save`` ``array`` so that readers see either no file or the whole of it."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())
