"""DICOM results per film: SR, SC and a whole outbox delivery, against decode + preprocess.

The baseline is what every scored film costs anyway: decoding and preprocessing one
2048 px uncompressed 12-bit knee film. Each result step is timed interleaved with it
(medians), so the ratios hold on a shared, drifting machine.

    .venv/bin/python benchmarks/delivery.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from common import interleaved_seconds, machine, ratio, render_originals, table
from decode import INPUT_SIZE, _decode_and_preprocess
from pydicom.uid import generate_uid

from koa_core.config import Settings
from koa_core.delivery.capture import build_capture
from koa_core.delivery.deliver import deliver_findings
from koa_core.delivery.findings import Algorithm, FilmFindings, KneeFinding
from koa_core.delivery.report import build_report

SIZE_PX = 2048
FILMS_PER_CALL = 8  # a night is delivered in one call: the table append is shared
ALGORITHM = Algorithm("koa", "bench", "bench-model", "0" * 64, "bench-localizer", "1" * 64)


def _findings(path: Path) -> FilmFindings:
    probabilities = (0.1, 0.2, 0.4, 0.2, 0.1)
    knees = tuple(
        KneeFinding(side, 2, probabilities, 0.7, (1, 2, 3), True, "set", x, 1024.0, 140.0)
        for side, x in (("R", 512.0), ("L", 1536.0))
    )
    overlay = np.random.default_rng(0).integers(0, 256, (SIZE_PX, SIZE_PX, 3), dtype=np.uint8)
    source = pydicom.dcmread(path, stop_before_pixels=True)
    return FilmFindings(source, knees, ALGORITHM, overlay)


def _renumbered(film: FilmFindings, index: int) -> FilmFindings:
    source = copy.copy(film.source)
    source.SOPInstanceUID = generate_uid(entropy_srcs=["bench-delivery", str(index)])
    return dataclasses.replace(film, source=source)


def run(quick: bool = False) -> dict[str, Any]:
    """Time decode + preprocess, SR, SC and a two-instance outbox delivery per film."""
    torch.set_num_threads(1)
    repeats = 3 if quick else 9
    with tempfile.TemporaryDirectory(prefix="koa-bench-delivery-") as tmp:
        folder = Path(tmp)
        path = render_originals(folder, 1, seed=11, size_px=SIZE_PX)[0]
        film = _findings(path)
        settings = Settings(home=folder / "home")
        outbox = str(folder / "outbox")
        night = [_renumbered(film, index) for index in range(FILMS_PER_CALL)]
        runs = {
            "decode + preprocess (baseline)": lambda: _decode_and_preprocess(path, INPUT_SIZE),
            "build SR": lambda: build_report(film),
            "build SC (2048 px RGB)": lambda: build_capture(film),
            "SR + SC kept, to an outbox, recorded": lambda: deliver_findings(
                night, outbox, batch_date=date(2026, 1, 15), run_id="bench", settings=settings
            ),
        }
        seconds = interleaved_seconds(runs, repeats)
        seconds["SR + SC kept, to an outbox, recorded"] /= FILMS_PER_CALL
    baseline = seconds["decode + preprocess (baseline)"]
    rows = [[name, f"{s * 1e3:.0f}", ratio(s, baseline)] for name, s in seconds.items()]
    figures: dict[str, Any] = {f"{name} ms": s * 1e3 for name, s in seconds.items()}
    figures["table"] = table(
        f"DICOM results per film (two knees; delivery: {FILMS_PER_CALL} films per call), "
        f"median of {repeats}, 1 thread ({machine()})",
        ["step", "ms", "vs decode + preprocess"],
        rows,
    )
    return figures


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
