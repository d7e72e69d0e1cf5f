"""One path from file to model input: training and nightly inputs agree byte for byte."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from koa_core.data.datasets import load_dataset
from koa_core.io.model_input import load_model_input, to_uint8
from koa_core.phantom import knee_dataset, render_knee, save_dicom
from koa_core.phantom.writers import save_field_png
from koa_core.pipeline.prepare import prepare_chunk

SIZE = 64
SYNTAXES = ("explicit", "deflated", "rle", "jpeg2000")


def _write_files(root: Path) -> list[Path]:
    """A knee of every grade per split, as DICOM (several syntaxes, both photometrics) and PNG."""
    rows = []
    for split_index, split in enumerate(("train", "val")):
        for grade in range(5):
            seed = 10 * split_index + grade
            laterality = "L" if grade % 2 else "R"
            photometric = "MONOCHROME1" if grade % 3 == 0 else "MONOCHROME2"
            image = render_knee(
                grade,
                laterality,
                seed,
                rows=420,
                columns=400,
                spacing_mm=0.4,
                bits_stored=12 + 4 * (grade % 2),
                photometric=photometric,
            )
            dicom = root / split / f"knee-{grade}.dcm"
            ds = knee_dataset(
                image,
                key=("one-path", split, grade),
                patient_id=f"P{seed}",
                study_date=date(2026, 1, 1),
            )
            save_dicom(ds, dicom, SYNTAXES[grade % len(SYNTAXES)])
            png = root / split / f"knee-{grade}_{laterality}.png"
            save_field_png(image, png)
            rows += [(path, grade, split) for path in (dicom, png)]
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "kl_grade", "split"])
        writer.writerows((p.relative_to(root).as_posix(), g, s) for p, g, s in rows)
    return [path for path, _, _ in rows]


def test_training_and_nightly_inputs_are_byte_identical(tmp_path: Path) -> None:
    root = tmp_path / "data"
    files = _write_files(root)
    dataset = load_dataset(root, SIZE)
    training = {
        path: image.numpy()
        for split in dataset.splits.values()
        for path, image in zip(split.paths, split.images, strict=True)
    }
    chunk = prepare_chunk(
        [{"source_path": str(path), "sha256": None} for path in files], tmp_path, 0, SIZE
    )
    nightly = np.load(chunk.array_path)
    assert not chunk.failures and len(training) == len(files) == len(nightly)
    for row in chunk.rows:
        relative = Path(row["source_path"]).relative_to(root).as_posix()
        expected = training[relative]
        assert expected.dtype == np.uint8
        assert np.array_equal(nightly[row["array_index"]], expected), relative


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_left_knees_are_mirrored_once(tmp_path: Path, laterality: str) -> None:
    image = render_knee(3, laterality, 5, rows=420, columns=400, spacing_mm=0.4)
    path = tmp_path / f"knee_{laterality}.png"
    save_field_png(image, path)
    model_input = load_model_input(path, SIZE)
    assert model_input.flipped == (laterality == "L")
    assert model_input.pixels.shape == (SIZE, SIZE) and model_input.pixels.dtype == np.uint8


def test_to_uint8_rounds_to_nearest_level() -> None:
    levels = to_uint8(np.array([0.0, 0.5 / 255, 0.51 / 255, 1.0], dtype=np.float32))
    assert levels.tolist() == [0, 0, 1, 255]
