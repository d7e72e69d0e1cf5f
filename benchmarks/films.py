"""Whole-film phantoms: seconds per film against ``render_knee`` on the same number of pixels.

``render_film`` sums two legs on a work grid of at most ``MAX_WORK_PX`` a side, then
upsamples and exposes once, as ``render_knee`` does for one knee; the baseline is
``render_knee`` at the film's own rows x columns and spacing, measured interleaved in the
same process (the shared machine's speed drifts).

    .venv/bin/python benchmarks/films.py [--quick]
"""

from __future__ import annotations

import argparse
from typing import Any

from common import interleaved_seconds, machine, ratio, table  # isort: skip

from koa_core.phantom.anatomy import render_knee
from koa_core.phantom.films import render_film

CASES = (
    ("bilateral 0.15 mm", "bilateral", 0.15, (345.0, 435.0)),
    ("bilateral 0.5 mm", "bilateral", 0.5, (345.0, 435.0)),
    ("unilateral 0.5 mm", "unilateral", 0.5, (220.0, 300.0)),
)


def run(quick: bool = False) -> dict[str, Any]:
    """Median seconds per film and per same-size ``render_knee``, and their ratio."""
    repeats = 3 if quick else 9
    rows, figures = [], {}
    for name, kind, spacing, size in CASES:
        film = render_film(kind, 1, spacing_mm=spacing, size_mm=size)
        shape = film.pixels.shape
        seconds = interleaved_seconds(
            {
                "film": lambda k=kind, sp=spacing, sz=size: render_film(
                    k, 1, spacing_mm=sp, size_mm=sz
                ),
                "knee": lambda sp=spacing, sh=shape: render_knee(
                    2, "R", 1, rows=sh[0], columns=sh[1], spacing_mm=sp
                ),
            },
            repeats,
        )
        figures[name] = seconds
        rows.append(
            (
                name,
                f"{shape[0]}x{shape[1]}",
                f"{seconds['film']:.3f}",
                f"{seconds['knee']:.3f}",
                ratio(seconds["film"], seconds["knee"]),
            )
        )
    print(machine())
    table("render_film", ("case", "pixels", "film s", "render_knee s", "ratio"), rows)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args().quick)
