"""A grader training set from labelled whole films: each knee cut where the localizer finds it.

A joint table (``koa train-localizer``'s format) that also carries ``kl_grade`` per knee
trains the grader on the champion localizer's ROIs of those films, through the same path a
night scores them with (``load_knee_inputs``), so the grader learns from the knees it will
see. Both knees of a film go to the same split (by a hash of the film's path).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from koa_core.data.datasets import KLDataset, SkippedFile, Split
from koa_core.data.labels import SPLITS, TEST_SHARE, VAL_SHARE
from koa_core.errors import DatasetError, ImageReadError, KneeLocalizationError
from koa_core.io.reader import read_metadata
from koa_core.localize.knee_inputs import load_knee_inputs
from koa_core.localize.labels import LabelledFilm, films_fingerprint, read_film_labels
from koa_core.pipeline.prepare import knee_finder

log = logging.getLogger(__name__)
FILM_COLUMNS = {"side", "joint_x", "joint_y", "kl_grade"}


def _frame(table: Path) -> pd.DataFrame:
    if table.suffix.lower() == ".parquet":
        frame = pd.read_parquet(table).astype(str)
    else:
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    return frame


def is_film_table(table: Path) -> bool:
    """Whether ``table`` labels knees on films (joint centres and a grade per knee)."""
    try:
        return set(_frame(table).columns) >= FILM_COLUMNS
    except (OSError, ValueError):
        return False


def _grades(table: Path, films: list[LabelledFilm]) -> dict[tuple[str, str], int]:
    """KL grade by (film path, side), from the table's ``file`` or ``sop_instance_uid``."""
    by_uid = {}
    if "file" not in _frame(table).columns:
        by_uid = {str(read_metadata(film.path).sop_instance_uid): film for film in films}
    by_relpath = {film.relpath: film for film in films}
    grades = {}
    for row in _frame(table).to_dict("records"):
        if not str(row.get("kl_grade", "")).strip() or not row.get("side"):
            continue
        film = by_relpath.get(row["file"]) if "file" in row else by_uid.get(row["sop_instance_uid"])
        if film is not None:
            grades[(str(film.path), row["side"])] = int(float(row["kl_grade"]))
    return grades


def _split(film: LabelledFilm) -> str:
    fraction = int(hashlib.sha256(film.relpath.encode()).hexdigest()[:8], 16) / 2**32
    if fraction >= 1 - TEST_SHARE:
        return "test"
    return "val" if fraction >= 1 - TEST_SHARE - VAL_SHARE else "train"


def load_film_dataset(root: Path, table: Path, input_size: int, localizer_dir: Path) -> KLDataset:
    """The knees of the labelled films under ``root``, cut by the localizer in ``localizer_dir``.

    Knees the localizer does not find, or finds on the other side, are skipped (logged);
    a film it cannot read or grade is skipped with its reason.

    Raises:
        DatasetError: the table cannot be used, or no knee is left.
    """
    films = read_film_labels(root, table)
    grades = _grades(table, films)
    finder = knee_finder(str(localizer_dir))
    parts: dict[str, tuple[list[np.ndarray], list[int], list[str]]] = {}
    skipped = []
    for film in films:
        try:
            found = load_knee_inputs(film.path, input_size, finder)
        except (ImageReadError, KneeLocalizationError) as error:
            skipped.append(SkippedFile(film.relpath, error.reason, error.detail))
            continue
        images, labels, paths = parts.setdefault(_split(film), ([], [], []))
        for knee in found.knees:
            grade = grades.get((str(film.path), knee.side))
            if grade is None:
                log.info("%s: the %s knee found has no grade in the table", film.relpath, knee.side)
                continue
            images.append(knee.pixels)
            labels.append(grade)
            paths.append(f"{film.relpath}#{knee.side}")
    empty = [name for name in SPLITS if not parts.get(name, ([], [], []))[1]]
    if empty:
        raise DatasetError(
            f"{table}: no graded knee found for split(s) {empty} on the films under {root}"
            f" ({len(films)} films; splits are drawn per film, 70/15/15: label more films)"
        )
    splits = {
        name: Split(torch.from_numpy(np.stack(images)), torch.tensor(labels), tuple(paths))
        for name, (images, labels, paths) in parts.items()
        if labels
    }
    graded = ",".join(f"{path}:{side}:{grade}" for (path, side), grade in sorted(grades.items()))
    fingerprint = hashlib.sha256(f"{films_fingerprint(films)}|{graded}".encode()).hexdigest()
    return KLDataset(root, input_size, fingerprint, splits, tuple(skipped))
