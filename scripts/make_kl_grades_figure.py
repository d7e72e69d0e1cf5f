"""Regenerate docs/kl_grades.png with `koa preview`: one knee at KL 0-4, as the model sees it.

Each grade is written as a full-size DICOM radiograph (2048 px, left knee, MONOCHROME1 for
grade 4 to show the photometric fix) and previewed through the same code path as
`koa preview FILE --out PNG`; the five previews are tiled with their grade.

    .venv/bin/python scripts/make_kl_grades_figure.py
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from koa_core.io.inspection import write_preview
from koa_core.phantom import render_knee
from koa_core.phantom.dicom import knee_dataset, save_dicom

SEED = 7
OUT = Path(__file__).resolve().parent.parent / "docs" / "kl_grades.png"


def preview_tile(grade: int, workdir: Path) -> np.ndarray:
    photometric = "MONOCHROME1" if grade == 4 else "MONOCHROME2"
    image = render_knee(
        grade,
        "L",
        SEED,
        rows=2048,
        columns=1792,
        spacing_mm=0.14,
        bits_stored=16,
        photometric=photometric,
    )
    dicom = workdir / f"kl{grade}.dcm"
    dataset = knee_dataset(image, key=(SEED, grade), patient_id="DEMO", study_date=date.today())
    save_dicom(dataset, dicom)
    preview = workdir / f"kl{grade}.png"
    write_preview(dicom, preview, 224)
    tile = Image.open(preview).convert("RGB")
    ImageDraw.Draw(tile).text(
        (6, 4), f"KL {grade}", fill=(255, 220, 0), font=ImageFont.load_default(size=18)
    )
    return np.asarray(tile)


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        tiles = [preview_tile(grade, Path(workdir)) for grade in range(5)]
    gap = np.zeros((224, 4, 3), np.uint8)
    strip = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
    Image.fromarray(strip).save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
