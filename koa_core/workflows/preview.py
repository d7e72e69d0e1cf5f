"""``koa preview`` of a whole film: what koa found on it, how it graded each knee, and why.

The picture is the overlay the radiologist's secondary capture shows (each joint's ROI box,
its heatmap, side, KL grade, P(KOA) and prediction set) with, beside it, each knee's ROI
exactly as the grader saw it (mirrored for a left knee, at the model's input size).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from koa_core.config import get_settings
from koa_core.errors import ModelNotFoundError
from koa_core.localize.knee_inputs import FilmInputs, load_knee_inputs
from koa_core.pipeline.film_results import ScoredKnee, film_overlay
from koa_core.pipeline.prepare import knee_finder, knee_rows, save_array_atomically
from koa_core.pipeline.score import score_chunk
from koa_core.registry import ModelRegistry, ModelVersion, champion_localizer

ROI_PREVIEW_PX = 256  # each ROI is shown this large beside the film
MARGIN_PX = 8


@dataclass(frozen=True)
class FilmPreview:
    """The picture and the knees' rows (side, grade, P(KOA), set, refer) it shows."""

    picture: npt.NDArray[np.uint8]
    knees: list[dict[str, Any]]

    def summary(self) -> str:
        """One line per knee, for the terminal."""
        return "; ".join(
            f"{row['knee_side']} knee: KL{row['kl_grade']}, P(KOA) {row['p_koa']:.2f},"
            f" set {{{','.join(map(str, row['grade_set']))}}}"
            + (f", refer ({row['refer_reason']})" if row["refer"] else "")
            for row in self.knees
        )


def _grader() -> ModelVersion:
    champion = ModelRegistry().champion()
    if champion is None:
        raise ModelNotFoundError("no champion grader: run `make demo` or `koa train --promote`")
    return champion


def score_film(
    path: Path, grader: ModelVersion, localizer: ModelVersion
) -> tuple[FilmInputs, list[dict[str, Any]]]:
    """The film's knee inputs and their scored rows (with heatmaps), as a night scores them."""
    card = grader.model_card()
    film = load_knee_inputs(path, card.input_size, knee_finder(str(localizer.path)))
    rows = knee_rows({"source_path": str(path)}, film, 0)
    with tempfile.TemporaryDirectory(prefix="koa-preview-") as scratch:
        array = Path(scratch) / "chunk-00000.npy"
        save_array_atomically(array, np.stack([knee.pixels for knee in film.knees]))
        scored = score_chunk(
            str(array),
            rows,
            str(grader.path),
            device="cpu",
            refer_below=get_settings().refer_below_localizer_score,
            heatmaps=True,
        )
        knees = [ScoredKnee.of_row(row) for row in scored]
    return film, [{**knee.row, "heatmap": knee.heatmap} for knee in knees]


def _roi_column(film: FilmInputs, rows: list[dict[str, Any]], height: int) -> Image.Image:
    column = Image.new("RGB", (ROI_PREVIEW_PX + 2 * MARGIN_PX, height), "black")
    draw = ImageDraw.Draw(column)
    font = ImageFont.load_default(size=14)
    top = MARGIN_PX
    for knee, row in zip(film.knees, rows, strict=True):
        roi = Image.fromarray(knee.pixels, mode="L").resize((ROI_PREVIEW_PX, ROI_PREVIEW_PX))
        draw.text(
            (MARGIN_PX, top),
            f"{row['knee_side']} knee, as the grader sees it",
            fill="white",
            font=font,
        )
        column.paste(roi.convert("RGB"), (MARGIN_PX, top + 20))
        top += ROI_PREVIEW_PX + 20 + MARGIN_PX
    return column


def preview_film(path: Path, out: Path) -> FilmPreview:
    """Write the preview of the film at ``path`` to ``out`` (PNG) with the champions.

    Raises:
        LocalizerNotFoundError, ModelNotFoundError: no champion localizer or grader.
        ImageReadError, KneeLocalizationError: the film cannot be read or graded.
    """
    grader, localizer = _grader(), champion_localizer()
    film, rows = score_film(path, grader, localizer)
    knees = [ScoredKnee(row, row["heatmap"]) for row in rows]
    overlay = Image.fromarray(film_overlay(path, knees))
    needed = len(rows) * (ROI_PREVIEW_PX + 20 + MARGIN_PX) + MARGIN_PX
    column = _roi_column(film, rows, max(overlay.height, needed))
    canvas = Image.new("RGB", (overlay.width + column.width, max(overlay.height, needed)))
    canvas.paste(overlay, (0, 0))
    canvas.paste(column, (overlay.width, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    shown = [{k: v for k, v in row.items() if k != "heatmap"} for row in rows]
    return FilmPreview(np.asarray(canvas), shown)
