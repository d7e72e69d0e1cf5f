"""Write whole phantom films as DICOM files with a per-knee truth table (labels.csv)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np

from koa_core.errors import PhantomSpecError
from koa_core.phantom.anatomy import rng_for
from koa_core.phantom.dicom import film_dataset, save_dicom
from koa_core.phantom.films import FilmKnee, render_film
from koa_core.phantom.parallel import map_in_order
from koa_core.phantom.writers import NIGHTLY_TRANSFER_MIX

FILM_MIX = {"bilateral": 0.6, "unilateral": 0.4}
"""Shares of a ``"mixed"`` set: most knee series are standing bilateral PA films."""
WRITE_KINDS = ("bilateral", "unilateral", "lateral", "mixed")
FILM_LABEL_COLUMNS = (
    "file",
    "sop_instance_uid",
    "side",
    "joint_x",
    "joint_y",
    "kl_grade",
    "true_kl_grade",
    "kind",
)
"""labels.csv: one row per knee, joint_x/joint_y in stored pixels from the top-left pixel; a
lateral view, with no knee to grade, has one row with the side empty and its joint centre."""
_FILM_STUDY_DATE = date(2021, 1, 1)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class FilmRecord:
    """One written film and its truth: every knee's side, joint centre, grade and label."""

    path: Path
    sop_instance_uid: str
    kind: str
    image_laterality: str
    spacing_mm: float
    knees: tuple[FilmKnee, ...]
    transfer_syntax: str = "explicit"
    lateral_joint: tuple[float, float] | None = None


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    shares = np.array(list(weights.values())) / sum(weights.values())
    return names[int(rng.choice(len(names), p=shares))]


def film_file(
    folder: Path,
    seed: int,
    index: int,
    kind: str,
    key: tuple[object, ...],
    study_date: date,
    *,
    spacing_mm: float | None = None,
    label_noise: float = 0.0,
    transfer_syntax: str | None = None,
    lateral_share: float = 0.0,
) -> FilmRecord:
    """Render film ``index`` and write it to ``FOLDER/<patient>/<study>/<sop>.dcm``.

    A pure function of its arguments: ``kind`` ``"mixed"`` is drawn from ``FILM_MIX`` (with
    lateral views at about ``lateral_share``) and a ``None`` transfer syntax from
    ``NIGHTLY_TRANSFER_MIX``, both from ``(seed, index)``.
    """
    if kind not in WRITE_KINDS:
        raise PhantomSpecError(f"film kind must be one of {WRITE_KINDS}, got {kind!r}")
    rng = rng_for(seed, index)
    mix = {**FILM_MIX, "lateral": lateral_share} if lateral_share else FILM_MIX
    drawn_kind, drawn_syntax = _choose(rng, mix), _choose(rng, NIGHTLY_TRANSFER_MIX)
    kind = drawn_kind if kind == "mixed" else kind
    syntax = transfer_syntax or drawn_syntax
    film = render_film(
        kind, int(rng.integers(2**62)), spacing_mm=spacing_mm, label_noise=label_noise
    )
    patient_id = f"KOAF{seed}-{index:06d}"
    ds = film_dataset(film, key=key, patient_id=patient_id, study_date=study_date)
    path = folder / patient_id / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    save_dicom(ds, path, syntax)
    return FilmRecord(
        path,
        str(ds.SOPInstanceUID),
        kind,
        film.image_laterality,
        film.spacing_mm,
        film.knees,
        syntax,
        film.lateral_joint,
    )


def write_film_labels(path: Path, records: Iterable[FilmRecord], root: Path) -> None:
    """Write the truth table (``FILM_LABEL_COLUMNS``): one row per knee, and for a lateral
    view one with the side empty and its joint centre, so a localizer trained on it learns to
    find no knee to grade there and to name the view."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FILM_LABEL_COLUMNS)
        for record in records:
            file = record.path.relative_to(root).as_posix()
            if not record.knees:
                joint = record.lateral_joint
                x, y = (f"{v:.2f}" for v in joint) if joint else ("", "")
                writer.writerow([file, record.sop_instance_uid, "", x, y, "", "", record.kind])
            writer.writerows(
                [
                    file,
                    record.sop_instance_uid,
                    knee.side,
                    f"{knee.joint_x:.2f}",
                    f"{knee.joint_y:.2f}",
                    knee.label,
                    knee.grade,
                    record.kind,
                ]
                for knee in record.knees
            )


def _advance(progress: Progress | None) -> None:
    if progress is not None:
        progress(1)


def write_films(
    out: Path,
    n: int,
    kind: str,
    seed: int,
    *,
    spacing_mm: float | None = None,
    label_noise: float = 0.0,
    lateral_share: float = 0.0,
    progress: Progress | None = None,
) -> list[FilmRecord]:
    """Write ``n`` films as ``OUT/<patient>/<study>/<sop>.dcm`` and ``OUT/labels.csv``.

    Args:
        out: output folder.
        n: number of films.
        kind: ``"bilateral"``, ``"unilateral"``, ``"lateral"`` or ``"mixed"`` (``FILM_MIX``).
        seed: the same seed writes the same files.
        spacing_mm: detector spacing of every film (default: drawn per film, 0.1-0.2 mm).
        label_noise: chance that a knee's ``kl_grade`` is an adjacent grade.
        lateral_share: with ``"mixed"``, about this share of lateral views (negatives for
            a localizer, which must not find a knee to grade on them).
        progress: called with 1 after each film.
    """
    render = partial(
        _labelled_film,
        out,
        seed,
        kind,
        spacing_mm=spacing_mm,
        label_noise=label_noise,
        lateral_share=lateral_share,
    )
    records = []
    for record in map_in_order(render, n):
        records.append(record)
        _advance(progress)
    write_film_labels(out / "labels.csv", records, out)
    return records


def _labelled_film(
    out: Path,
    seed: int,
    kind: str,
    index: int,
    *,
    spacing_mm: float | None,
    label_noise: float,
    lateral_share: float,
) -> FilmRecord:
    """Film ``index`` of ``write_films`` (module level, so worker processes can run it)."""
    return film_file(
        out,
        seed,
        index,
        kind,
        (seed, index, "film"),
        _FILM_STUDY_DATE,
        spacing_mm=spacing_mm,
        label_noise=label_noise,
        transfer_syntax="explicit",
        lateral_share=lateral_share,
    )


def write_nightly_films(
    out: Path,
    n: int,
    seed: int,
    batch_date: date,
    kind: str = "mixed",
    *,
    spacing_mm: float | None = None,
    label_noise: float = 0.0,
    progress: Progress | None = None,
) -> list[FilmRecord]:
    """Write one night of films under ``OUT/YYYY-MM-DD/<patient>/<study>/<sop>.dcm``.

    Transfer syntaxes are mixed as ``NIGHTLY_TRANSFER_MIX``. The truth goes to
    ``OUT/YYYY-MM-DD.films.csv`` (``FILM_LABEL_COLUMNS``, files relative to ``OUT``), outside
    the batch folder so a scan of the batch never sees it. Film ``i`` depends only on
    ``(seed, i, batch_date)``: ``film_file`` can be mapped over chunks in other processes.
    """
    folder = out / batch_date.isoformat()
    records = []
    for index in range(n):
        records.append(
            film_file(
                folder,
                seed,
                index,
                kind,
                (seed, index, batch_date.isoformat(), "film"),
                batch_date,
                spacing_mm=spacing_mm,
                label_noise=label_noise,
            )
        )
        _advance(progress)
    write_film_labels(out / f"{batch_date.isoformat()}.films.csv", records, out)
    return records
