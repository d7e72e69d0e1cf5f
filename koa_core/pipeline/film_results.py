"""A scored film's results for its radiologist: the overlay picture and the DICOM findings.

Built on the scoring workers, right after a chunk is scored, from its knee rows: each
film's knees' boxes and heatmaps are drawn (``koa_core.imaging.overlay``) on the small
picture of it that preparing kept (or on the film decoded once more where there is none),
and its findings handed to ``koa_core.delivery`` for the structured report and the
secondary capture, which are kept in the run's folder. Which of them are sent is decided
after the commit: a film whose rows the night's checks quarantined has its results
dropped (``deliver_night``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom

from koa_core.delivery.deliver import Instance, keep_instances
from koa_core.delivery.findings import Algorithm, FilmFindings, KneeFinding
from koa_core.errors import KoaError
from koa_core.imaging.overlay import FilmPicture, OverlayKnee, draw_overlay, render_overlay
from koa_core.io.reader import read_radiograph
from koa_core.schema import PROBABILITY_COLUMNS

Row = Mapping[str, Any]


@dataclass(frozen=True)
class ScoredKnee:
    """One knee's committed row and its heatmap (ROI orientation, as the grader saw it)."""

    row: Row
    heatmap: npt.NDArray[np.floating]

    @classmethod
    def of_row(cls, row: Row) -> ScoredKnee:
        """The knee of a scored row, its heatmap read from the chunk's file (zeros if none)."""
        if row.get("heatmap_path") is None:
            return cls(row, np.zeros((1, 1), np.float32))
        maps = np.load(row["heatmap_path"], mmap_mode="r")
        return cls(row, np.asarray(maps[int(row["heatmap_index"])], dtype=np.float32))


def knee_finding(row: Row) -> KneeFinding:
    """The delivery record of one knee's scores row."""
    return KneeFinding(
        side=row["knee_side"],
        kl_grade=int(row["kl_grade"]),
        probabilities=tuple(float(row[name]) for name in PROBABILITY_COLUMNS),
        p_koa=float(row["p_koa"]),
        grade_set=tuple(int(grade) for grade in row["grade_set"]),
        refer=bool(row["refer"]),
        refer_reason=row.get("refer_reason"),
        joint_x=float(row["joint_x"]),
        joint_y=float(row["joint_y"]),
        roi_mm=float(row["roi_mm"]),
    )


def overlay_knee(knee: ScoredKnee, decode_scale: int) -> OverlayKnee:
    """A knee as the overlay draws it: its box in decoded pixels, its heatmap in film
    orientation (a left knee's ROI was mirrored for the grader, so its map is mirrored back)."""
    row = knee.row
    top, bottom, left, right = (round(value / decode_scale) for value in row["roi_box"])
    heatmap = knee.heatmap[:, ::-1] if row["knee_side"] == "L" else knee.heatmap
    return OverlayKnee(
        side=row["knee_side"],
        box=(top, bottom, left, right),
        heatmap=np.ascontiguousarray(heatmap, dtype=np.float32),
        kl_grade=int(row["kl_grade"]),
        p_koa=float(row["p_koa"]),
        grade_set=tuple(int(grade) for grade in row["grade_set"]),
    )


def film_overlay(path: Path, knees: Sequence[ScoredKnee]) -> npt.NDArray[np.uint8]:
    """The overlay picture of the film at ``path`` with ``knees`` drawn on it.

    Drawn on the picture preparing kept (``picture_path``) when there is one: decoding a
    0.15 mm film again and shrinking it cost ~20 ms of the ~45 its overlay took.
    """
    kept = knees[0].row.get("picture_path") if knees else None
    if kept is None:
        radiograph = read_radiograph(path)
        drawn = [overlay_knee(knee, radiograph.decode_scale) for knee in knees]
        return render_overlay(radiograph.pixels, drawn)
    row = knees[0].row
    with np.load(kept) as pictures:
        picture = FilmPicture(pictures[row["picture_key"]], float(row["picture_scale"]))
    return draw_overlay(picture, [overlay_knee(knee, 1) for knee in knees])


def film_findings(path: Path, knees: Sequence[ScoredKnee], algorithm: Algorithm) -> FilmFindings:
    """Everything the SR and SC of one DICOM film need, its header read from ``path``."""
    source = pydicom.dcmread(path, stop_before_pixels=True)
    ordered = sorted(knees, key=lambda knee: knee.row["knee_side"] != "R")
    return FilmFindings(
        source=source,
        knees=tuple(knee_finding(knee.row) for knee in ordered),
        algorithm=algorithm,
        overlay=film_overlay(path, ordered),
    )


def keep_film_results(
    rows: Sequence[Row],
    algorithm: Algorithm,
    run_id: str,
    folder: Path,
    *,
    lossless_overlay: bool = False,
) -> dict[str, list[Instance] | str]:
    """Build and keep the SR and SC of every DICOM film among one chunk's scored rows.

    Args:
        rows: ``score_chunk`` rows (with ``roi_box`` and, when made, their heatmaps).
        algorithm: The identity written into every SR.
        run_id: The run the instances belong to.
        folder: Where they are kept (``koa_core.delivery.deliver.instances_dir``).
        lossless_overlay: Keep the SCs uncompressed (``build_capture``).

    Returns:
        Per film (``origin``): its kept instances, or why they could not be built (a
        film's bad header or findings must not stop the others' results).
    """
    films: dict[str, list[ScoredKnee]] = defaultdict(list)
    for row in rows:
        if row["file_format"] == "dicom" and row.get("sop_instance_uid"):
            films[row["origin"]].append(ScoredKnee.of_row(row))
    built: dict[str, list[Instance] | str] = {}
    for origin, knees in films.items():
        try:
            findings = film_findings(Path(origin), knees, algorithm)
            built[origin] = keep_instances(
                findings, run_id, folder, lossless_overlay=lossless_overlay
            )
        except (KoaError, OSError) as error:
            built[origin] = str(error)
    return built
