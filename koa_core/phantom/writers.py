"""Write phantom radiographs as DICOM DX or PNG files, in the nightly and KL-folder layouts."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from koa_core.imaging.transforms import ROI_MM, centre_crop, preprocess
from koa_core.phantom.anatomy import (
    Difficulty,
    KneeImage,
    difficulty_named,
    reader_label,
    render_knee,
    rng_for,
    sample_grade,
)
from koa_core.phantom.badfiles import write_bad_files
from koa_core.phantom.dicom import knee_dataset, save_dicom
from koa_core.phantom.parallel import map_in_order

NIGHTLY_TRANSFER_MIX = {
    "explicit": 0.5,
    "implicit": 0.1,
    "deflated": 0.1,
    "rle": 0.15,
    "jpeg2000": 0.15,
}
SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
DICOM_SIZE_PX = (1024, 2500)
KL_DICOM_SIZE_PX = (1024, 1280)
TRAINING_SPACING_MM = 0.4
"""Render spacing for 224 px PNGs: the 140 mm ROI is 350 px, then downsampled."""
PNG_SIZE = 224
FILE_FORMATS = ("dicom", "png")
_LABEL_STREAM = 1
_SPLIT_STREAM = 2
_KL_STUDY_DATE = date(2020, 1, 1)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PhantomRecord:
    """One written file and its truth.

    ``grade`` is the label as written (a reader's, when label noise is on), ``true_grade``
    the grade rendered; both are ``None`` for bad files, which carry ``expected_reason``.
    """

    path: Path
    grade: int | None
    true_grade: int | None
    laterality: str | None
    split: str | None = None
    sop_instance_uid: str | None = None
    expected_reason: str | None = None


@dataclass(frozen=True)
class Geometry:
    """Detector geometry of one image: rows x columns pixels of ``spacing_mm``."""

    rows: int
    columns: int
    spacing_mm: float


def sample_geometry(rng: np.random.Generator, size_px: tuple[int, int] = DICOM_SIZE_PX) -> Geometry:
    """A realistic field (180-300 mm wide, 200-320 mm tall), pixels 0.1-0.2 mm where possible.

    The spacing is pulled out of 0.1-0.2 mm only when ``size_px`` (the allowed side
    lengths) cannot hold the field otherwise, as with the small sizes tests use.
    """
    width = float(rng.uniform(180.0, 300.0))
    height = float(rng.uniform(max(200.0, width), 320.0))
    spacing = float(np.clip(rng.uniform(0.1, 0.2), height / size_px[1], width / size_px[0]))
    spacing = round(spacing, 4)
    rows = int(np.clip(round(height / spacing), *size_px))
    columns = int(np.clip(round(width / spacing), *size_px))
    return Geometry(rows, columns, spacing)


def training_geometry() -> Geometry:
    """Just the grader's ROI (``ROI_MM`` square) at ``TRAINING_SPACING_MM``.

    The grader sees ``ROI_MM`` around the localized joint. The anatomy is laid out in mm
    from the image centre with the joint ``Acquisition.shift_mm`` (a few mm) away from it,
    which stands for the localizer's error; so rendering only that square gives the
    grader's input several times faster than a whole radiograph would.
    """
    side = math.ceil(ROI_MM / TRAINING_SPACING_MM) + 2
    return Geometry(side, side, TRAINING_SPACING_MM)


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    return names[
        int(rng.choice(len(names), p=np.array(list(weights.values())) / sum(weights.values())))
    ]


def model_input_png(image: KneeImage) -> npt.NDArray[np.uint8]:
    """The 224 px, 8-bit crop of ``ROI_MM`` around the joint of ``image``, not mirrored.

    The joint lies ``shift_mm`` (a few mm, like a localizer's error) from the image centre,
    so the centre's ``ROI_MM`` square is the ROI a localizer would cut. Like the public KL
    datasets, left knees are not mirrored here: the file name and the ``laterality`` text
    chunk say which side it is, and koa's preprocessing mirrors it when the image is read.
    """
    roi = centre_crop(image.bone_bright(), image.spacing_mm, ROI_MM)
    model_input = preprocess(roi, None, PNG_SIZE)
    return np.asarray(np.rint(model_input.pixels * 255.0), dtype=np.uint8)


def _png_info(image: KneeImage, label: int) -> PngInfo:
    info = PngInfo()
    info.add_text("laterality", image.laterality)
    info.add_text("kl_grade", str(label))
    info.add_text("pixel_spacing_mm", f"{image.spacing_mm:g}")
    return info


def save_field_png(image: KneeImage, path: Path, label: int | None = None) -> None:
    """Write the central 150 mm of ``image`` as a 16-bit PNG (bone bright, not mirrored)."""
    field = centre_crop(image.bone_bright(), image.spacing_mm)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = _png_info(image, image.grade if label is None else label)
    Image.fromarray(np.asarray(field, dtype=np.uint16)).save(path, pnginfo=info)


def save_model_input_png(image: KneeImage, path: Path, label: int | None = None) -> None:
    """Write ``model_input_png(image)`` as an 8-bit greyscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = _png_info(image, image.grade if label is None else label)
    Image.fromarray(model_input_png(image)).save(path, pnginfo=info)


def _acquisition_choices(rng: np.random.Generator) -> tuple[str, int, str]:
    """Laterality, bits stored and photometric interpretation of one image."""
    laterality = "L" if rng.random() < 0.5 else "R"
    bits_stored = 12 if rng.random() < 0.7 else 16
    photometric = "MONOCHROME1" if rng.random() < 0.25 else "MONOCHROME2"
    return laterality, bits_stored, photometric


def _render(
    grade: int,
    rng: np.random.Generator,
    geometry: Geometry | None,
    difficulty: Difficulty | None = None,
) -> KneeImage:
    """Render with this image's acquisition choices; ``None`` geometry: the model's field."""
    laterality, bits_stored, photometric = _acquisition_choices(rng)
    field = geometry or training_geometry()
    return render_knee(
        grade,
        laterality,
        int(rng.integers(2**62)),
        rows=field.rows,
        columns=field.columns,
        spacing_mm=field.spacing_mm,
        bits_stored=bits_stored,
        photometric=photometric,
        marker=geometry is not None,
        difficulty=difficulty,
    )


def _check_format(file_format: str) -> None:
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}")


def nightly_image(
    out: Path,
    seed: int,
    index: int,
    batch_date: date,
    file_format: str = "dicom",
    *,
    size_px: tuple[int, int] = DICOM_SIZE_PX,
) -> PhantomRecord:
    """Render and write image ``index`` of a nightly batch; a pure function of its arguments.

    DICOM goes to ``OUT/YYYY-MM-DD/<patient>/<study>/<sop>.dcm`` in a transfer syntax drawn
    from ``NIGHTLY_TRANSFER_MIX``; PNG to ``.../<sop>_<laterality>.png`` (the 150 mm field).
    """
    _check_format(file_format)
    rng = rng_for(seed, index)
    grade = sample_grade(rng)
    geometry = sample_geometry(rng, size_px)
    syntax = _choice(rng, NIGHTLY_TRANSFER_MIX)
    image = _render(grade, rng, geometry)
    patient_id = f"KOA{seed}-{index:06d}"
    ds = knee_dataset(
        image,
        key=(seed, index, batch_date.isoformat()),
        patient_id=patient_id,
        study_date=batch_date,
    )
    folder = out / batch_date.isoformat() / patient_id / ds.StudyInstanceUID
    if file_format == "dicom":
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        save_dicom(ds, path, syntax)
    else:
        path = folder / f"{ds.SOPInstanceUID}_{image.laterality}.png"
        save_field_png(image, path)
    return PhantomRecord(path, grade, grade, image.laterality, None, str(ds.SOPInstanceUID))


def assign_splits(n: int, seed: int) -> list[str]:
    """Split names for images ``0..n-1``: a seeded shuffle cut 70/15/15 (exact counts)."""
    order = rng_for(seed, n, _SPLIT_STREAM).permutation(n)
    counts = [round(share * n) for _, share in SPLITS[:-1]]
    bounds = np.cumsum(counts)
    splits = [""] * n
    for rank, index in enumerate(order):
        splits[int(index)] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))][0]
    return splits


def kl_folder_image(
    out: Path,
    seed: int,
    index: int,
    split: str,
    file_format: str = "png",
    label_noise: float = 0.0,
    *,
    size_px: tuple[int, int] = KL_DICOM_SIZE_PX,
    difficulty: str | Difficulty | None = None,
) -> PhantomRecord:
    """Render and write image ``index`` to ``OUT/<split>/<label>/``; pure in its arguments.

    PNGs are the 224 px joint-centred crop (not mirrored), named ``<index>_<laterality>.png``;
    DICOMs are whole radiographs. With ``label_noise`` the folder (and the grade written in
    the file) is a reader's label, adjacent to the true grade with that probability.
    A ``difficulty`` (a name of ``DIFFICULTIES`` or a :class:`Difficulty`) renders subtler
    signs and more noise, and raises ``label_noise`` to at least its own.
    """
    _check_format(file_format)
    rng = rng_for(seed, index)
    grade = sample_grade(rng)
    png = file_format == "png"
    harder = None if difficulty is None else difficulty_named(difficulty)
    label_noise = max(label_noise, harder.label_noise if harder else 0.0)
    image = _render(grade, rng, None if png else sample_geometry(rng, size_px), harder)
    label = reader_label(grade, label_noise, rng_for(seed, index, _LABEL_STREAM))
    folder = out / split / str(label)
    if png:
        path = folder / f"{index:06d}_{image.laterality}.png"
        save_model_input_png(image, path, label)
        return PhantomRecord(path, label, grade, image.laterality, split)
    patient_id = f"KOA{seed}-{index:06d}"
    ds = knee_dataset(
        image, key=(seed, index, "kl"), patient_id=patient_id, study_date=_KL_STUDY_DATE
    )
    ds.ImageComments = f"KL={label}"
    path = folder / f"{index:06d}_{image.laterality}.dcm"
    save_dicom(ds, path)
    return PhantomRecord(path, label, grade, image.laterality, split, str(ds.SOPInstanceUID))


def write_labels(
    path: Path, records: Iterable[PhantomRecord], root: Path, *, with_true_grade: bool = False
) -> None:
    """Write ``labels.csv``: file (relative to ``root``), sop_instance_uid, kl_grade, ...

    Columns: ``file, sop_instance_uid, kl_grade, laterality, split`` and, with
    ``with_true_grade``, ``true_kl_grade`` (the grade rendered, before label noise).
    """
    columns = ["file", "sop_instance_uid", "kl_grade", "laterality", "split"]
    columns += ["true_kl_grade"] if with_true_grade else []
    rows = [_label_row(record, root, with_true_grade) for record in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)


def _label_row(record: PhantomRecord, root: Path, with_true_grade: bool) -> list[object]:
    row: list[object] = [
        record.path.relative_to(root).as_posix(),
        record.sop_instance_uid or "",
        record.grade,
        record.laterality,
        record.split or "",
    ]
    return row + ([record.true_grade] if with_true_grade else [])


def _merge_labels(path: Path, records: list[PhantomRecord], root: Path) -> None:
    """Write ``records``' truth beside that of earlier batches written to the same night.

    A night is often written in parts (DICOMs with one seed, PNGs with another): each part
    must add its rows, not replace the others'.
    """
    written = {record.path.relative_to(root).as_posix() for record in records}
    kept = []
    if path.is_file():
        with path.open(newline="") as handle:
            kept = [row for row in csv.DictReader(handle) if row["file"] not in written]
    write_labels(path, records, root)
    with path.open("a", newline="") as handle:
        csv.writer(handle).writerows(
            [row[c] for c in ("file", "sop_instance_uid", "kl_grade", "laterality", "split")]
            for row in kept
        )


def _advance(progress: Progress | None) -> None:
    if progress is not None:
        progress(1)


def _nightly_image_at(
    out: Path,
    seed: int,
    batch_date: date,
    file_format: str,
    size_px: tuple[int, int],
    index: int,
) -> PhantomRecord:
    """Image ``index`` of ``write_nightly_batch`` (module level, for worker processes)."""
    return nightly_image(out, seed, index, batch_date, file_format, size_px=size_px)


def _kl_folder_image_at(
    out: Path,
    seed: int,
    splits: tuple[str, ...],
    file_format: str,
    label_noise: float,
    size_px: tuple[int, int],
    difficulty: str | Difficulty | None,
    index: int,
) -> PhantomRecord:
    """Image ``index`` of ``write_kl_folders`` (module level, for worker processes)."""
    return kl_folder_image(
        out,
        seed,
        index,
        splits[index],
        file_format,
        label_noise,
        size_px=size_px,
        difficulty=difficulty,
    )


def write_nightly_batch(
    out: Path,
    n: int,
    seed: int,
    batch_date: date,
    file_format: str = "dicom",
    bad: int = 0,
    progress: Progress | None = None,
    *,
    size_px: tuple[int, int] = DICOM_SIZE_PX,
) -> list[PhantomRecord]:
    """Write one night's batch under ``OUT/YYYY-MM-DD/`` plus ``bad`` bad files.

    The truth table goes to ``OUT/YYYY-MM-DD.labels.csv`` (rows of other parts of the same
    night are kept), outside the batch folder so a scan of the batch never sees it. Bad
    files go to ``OUT/YYYY-MM-DD/KOA-BAD/``.
    Image ``i`` depends only on ``(seed, i, batch_date)``: ``nightly_image`` can be mapped
    over chunks of indices in other processes with the same result.
    """
    render = partial(_nightly_image_at, out, seed, batch_date, file_format, size_px)
    records = []
    for record in map_in_order(render, n):
        records.append(record)
        _advance(progress)
    _merge_labels(out / f"{batch_date.isoformat()}.labels.csv", records, out)
    for bad_file in write_bad_files(out / batch_date.isoformat() / "KOA-BAD", bad, seed):
        records.append(
            PhantomRecord(bad_file.path, None, None, None, expected_reason=bad_file.expected_reason)
        )
        _advance(progress)
    return records


def write_kl_folders(
    out: Path,
    n: int,
    seed: int,
    file_format: str = "png",
    label_noise: float = 0.0,
    progress: Progress | None = None,
    *,
    size_px: tuple[int, int] = KL_DICOM_SIZE_PX,
    difficulty: str | Difficulty | None = None,
) -> list[PhantomRecord]:
    """Write ``n`` images in the image-folder layout ``OUT/{train,val,test}/{0..4}/``.

    Also writes ``OUT/labels.csv`` (with ``true_kl_grade`` when labels are noisy).
    ``difficulty``: see :func:`kl_folder_image` (``None``: the default phantoms).
    ``kl_folder_image`` with ``assign_splits(n, seed)`` can be mapped over chunks.
    """
    _check_format(file_format)
    render = partial(
        _kl_folder_image_at,
        out,
        seed,
        tuple(assign_splits(n, seed)),
        file_format,
        label_noise,
        size_px,
        difficulty,
    )
    records = []
    for record in map_in_order(render, n):
        records.append(record)
        _advance(progress)
    noisy = label_noise > 0 or (
        difficulty is not None and difficulty_named(difficulty).label_noise > 0
    )
    write_labels(out / "labels.csv", records, out, with_true_grade=noisy)
    return records
