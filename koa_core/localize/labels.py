"""The joint-centre labels of whole films: one table row per knee, read and checked.

The table (CSV or Parquet) has ``side`` (``R``/``L``, the patient's side), ``joint_x`` and
``joint_y`` (the joint centre in stored-image pixels, origin top-left: column, row) and
names its film by ``file`` (a path relative to the data folder) or ``sop_instance_uid``
(matched to (0008,0018) SOPInstanceUID of the DICOM files under the folder). An optional
``pixel_spacing_mm`` column supplies the spacing of files that carry none (PNG, JPEG);
other columns (e.g. ``kl_grade``) are ignored. A row whose ``side``, ``joint_x`` and
``joint_y`` are all empty lists a film with no knee on it (a lateral view, a hip): a
negative for training. Such a film is a lateral view, which the localizer learns to name,
when an optional ``view`` column says so (``lateral`` or a (0018,5101) ViewPosition term
such as ``LL``; ``frontal``, ``PA``, ``AP`` or empty otherwise) or, where it is empty, when
the file's own ViewPosition does; its row may give the side-view joint's centre in
``joint_x``/``joint_y`` with ``side`` empty. Every error names the row and the column.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from koa_core.errors import DatasetError, ImageReadError
from koa_core.io.header_evidence import FRONTAL_VIEWS, LATERAL_VIEWS
from koa_core.io.reader import read_metadata
from koa_core.io.record import ImageMetadata
from koa_core.storage.files import file_sha256

SIDES = ("R", "L")
COORDINATE_COLUMNS = ("joint_x", "joint_y")
TABLE_NAMES = ("labels.csv", "labels.parquet")


@dataclass(frozen=True)
class KneeLabel:
    """One labelled joint: the patient's ``side`` and its centre (column ``x``, row ``y``)."""

    side: str
    x: float
    y: float


@dataclass(frozen=True)
class LabelledFilm:
    """A film and its labelled knees; ``spacing_mm`` is None when neither file nor table
    gives one; a ``lateral`` view has no knees."""

    path: Path
    relpath: str
    knees: tuple[KneeLabel, ...]
    rows: int
    columns: int
    spacing_mm: float | None
    lateral: bool = False
    lateral_joint: tuple[float, float] | None = None


def _read_table(table: Path) -> pd.DataFrame:
    try:
        if table.suffix.lower() == ".parquet":
            frame = pd.read_parquet(table)
        else:
            frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{table}: not a readable labels table: {error}") from error
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    missing = [c for c in ("side", *COORDINATE_COLUMNS) if c not in frame.columns]
    if missing:
        raise DatasetError(f"{table}: missing column(s) {missing} (columns: {list(frame.columns)})")
    if "file" not in frame.columns and "sop_instance_uid" not in frame.columns:
        raise DatasetError(f"{table}: needs a file or a sop_instance_uid column")
    return frame


def _headers_by_uid(root: Path, table: Path) -> dict[str, ImageMetadata]:
    """Header of every readable DICOM under ``root``, by (0008,0018) SOPInstanceUID."""
    headers = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p != table):
        try:
            meta = read_metadata(path)
        except ImageReadError:
            continue
        if meta.sop_instance_uid:
            headers[meta.sop_instance_uid] = meta
    return headers


def _text(row: pd.Series, column: str) -> str:
    value = row.get(column)
    return "" if value is None or pd.isna(value) else str(value).strip()


def _number(row: pd.Series, column: str, where: str) -> float:
    try:
        value = float(_text(row, column))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{where}, column {column}: {row.get(column)!r} is not a number")
    return value


def _header(
    root: Path, row: pd.Series, by_uid: dict[str, ImageMetadata] | None, where: str
) -> ImageMetadata:
    if by_uid is not None:
        uid = _text(row, "sop_instance_uid")
        if uid not in by_uid:
            raise DatasetError(
                f"{where}, column sop_instance_uid: no DICOM file under {root} has {uid!r}"
            )
        return by_uid[uid]
    name = _text(row, "file")
    path = (root / name).resolve()
    if not name or not path.is_relative_to(root) or not path.is_file():
        raise DatasetError(f"{where}, column file: {name!r} is not a file under {root}")
    try:
        return read_metadata(path)
    except ImageReadError as error:
        raise DatasetError(f"{where}, column file: {error}") from error


def _joint(row: pd.Series, meta: ImageMetadata, where: str) -> tuple[float, float]:
    x, y = (_number(row, column, where) for column in COORDINATE_COLUMNS)
    for column, value, size in (("joint_x", x, meta.columns), ("joint_y", y, meta.rows)):
        if not 0 <= value < size:
            raise DatasetError(
                f"{where}, column {column}: {value:g} lies outside the image"
                f" ({meta.columns} columns x {meta.rows} rows)"
            )
    return x, y


def _knee(row: pd.Series, meta: ImageMetadata, where: str) -> KneeLabel:
    side = _text(row, "side").upper()
    if side not in SIDES:
        raise DatasetError(f"{where}, column side: {row.get('side')!r} is not R or L")
    return KneeLabel(side, *_joint(row, meta, where))


def _spacing(row: pd.Series, meta: ImageMetadata, where: str) -> float | None:
    if meta.pixel_spacing_mm is not None:
        return meta.pixel_spacing_mm[0]
    if not _text(row, "pixel_spacing_mm"):
        return None
    value = _number(row, "pixel_spacing_mm", where)
    if value <= 0:
        raise DatasetError(f"{where}, column pixel_spacing_mm: {value:g} is not positive")
    return value


def _lateral(row: pd.Series, meta: ImageMetadata, where: str) -> bool:
    """Whether the row's film is a lateral view: its ``view`` column, else its header."""
    view = _text(row, "view").upper()
    if view in LATERAL_VIEWS or view == "LATERAL":
        return True
    if view in FRONTAL_VIEWS or view == "FRONTAL":
        return False
    if view:
        raise DatasetError(f"{where}, column view: {row.get('view')!r} is not lateral or frontal")
    return (meta.view_position or "").strip().upper() in LATERAL_VIEWS


def read_film_labels(root: Path, table: Path) -> list[LabelledFilm]:
    """The labelled films a joint-centre table lists (see the module docstring), in the
    order they first appear.

    Raises:
        DatasetError: a missing column, a side not R/L, a coordinate that is not a number
            or lies outside its image, an unknown file or SOPInstanceUID, one side
            labelled twice on a film, a film listed both with knees and without, or a
            lateral view listed with knees.
    """
    root, table = root.resolve(), table.resolve()
    frame = _read_table(table)
    by_uid = None if "file" in frame.columns else _headers_by_uid(root, table)
    films: dict[str, tuple[ImageMetadata, float | None, list[KneeLabel], bool]] = {}
    lateral: dict[str, bool] = {}
    lateral_joints: dict[str, tuple[float, float]] = {}
    # Row numbers as a spreadsheet shows them: the header is row 1.
    for number, (_, row) in enumerate(frame.iterrows(), start=2):
        where = f"{table.name} row {number}"
        meta = _header(root, row, by_uid, where)
        lateral[meta.path] = lateral.get(meta.path, False) or _lateral(row, meta, where)
        if (
            lateral[meta.path]
            and not _text(row, "side")
            and any(_text(row, column) for column in COORDINATE_COLUMNS)
        ):
            lateral_joints[meta.path] = _joint(row, meta, where)
        if not any(_text(row, column) for column in ("side", *COORDINATE_COLUMNS)) or (
            meta.path in lateral_joints
        ):
            if meta.path in films:
                raise DatasetError(f"{where}: {meta.path} is listed with knees and without")
            films[meta.path] = (meta, _spacing(row, meta, where), [], True)
            continue
        if lateral[meta.path]:
            raise DatasetError(f"{where}: {meta.path} is a lateral view: it lists no knees")
        knee = _knee(row, meta, where)
        entry = films.setdefault(meta.path, (meta, _spacing(row, meta, where), [], False))
        if entry[3]:
            raise DatasetError(f"{where}: {meta.path} is listed with knees and without")
        knees = entry[2]
        if any(known.side == knee.side for known in knees):
            raise DatasetError(
                f"{where}, column side: {knee.side} is labelled twice on {meta.path}"
            )
        knees.append(knee)
    return [
        LabelledFilm(
            Path(path),
            Path(path).resolve().relative_to(root).as_posix(),
            tuple(knees),
            meta.rows,
            meta.columns,
            spacing,
            lateral[path],
            lateral_joints.get(path),
        )
        for path, (meta, spacing, knees, _) in films.items()
    ]


def find_labels_table(root: Path) -> Path:
    """``root/labels.csv`` or ``root/labels.parquet``.

    Raises:
        DatasetError: neither exists.
    """
    for name in TABLE_NAMES:
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: no labels.csv or labels.parquet; pass the labels table")


def films_fingerprint(films: Sequence[LabelledFilm]) -> str:
    """sha256 over each film's relative path, content sha256 and labelled knees, sorted."""
    digest = hashlib.sha256()
    for film in sorted(films, key=lambda f: f.relpath):
        knees = ";".join(f"{k.side},{k.x:.2f},{k.y:.2f}" for k in film.knees)
        knees += f"\tlateral {film.lateral_joint}" if film.lateral else ""
        digest.update(f"{film.relpath}\t{file_sha256(film.path)}\t{knees}\n".encode())
    return digest.hexdigest()
