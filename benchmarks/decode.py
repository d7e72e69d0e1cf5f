"""Decode + preprocess: ms per 2048 px radiograph by file format, on one core.

Each format holds the same phantom knees (12-bit, 2048 x 2048). JPEG lossless is written
by dcmtk's ``dcmcjpeg +e1`` (pydicom cannot encode it); JPEG 2000 is read twice, at full
resolution and at the reduced level the nightly flow uses (``target_size=224``).

    .venv/bin/python benchmarks/decode.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from common import machine, median_seconds, ratio, render_originals, table
from PIL import Image

from koa_core.imaging.transforms import preprocess
from koa_core.io.reader import read_radiograph

SIZE_PX = 2048
INPUT_SIZE = 224


def write_formats(original: Path, folder: Path) -> dict[str, Path]:
    """The knee in ``original`` in every format, keyed by format name."""
    from koa_core.phantom import save_dicom

    files = {"uncompressed": original}
    for name, syntax in (("RLE", "rle"), ("JPEG 2000", "jpeg2000")):
        files[name] = folder / f"{original.stem}-{syntax}.dcm"
        save_dicom(pydicom.dcmread(original), files[name], syntax)
    if shutil.which("dcmcjpeg"):
        files["JPEG lossless (dcmtk)"] = folder / f"{original.stem}-jpegll.dcm"
        subprocess.run(
            ["dcmcjpeg", "+e1", str(original), str(files["JPEG lossless (dcmtk)"])], check=True
        )
    pixels = pydicom.dcmread(original).pixel_array.astype(np.uint16)
    files["PNG 16-bit"] = folder / f"{original.stem}.png"
    Image.fromarray(pixels).save(files["PNG 16-bit"])
    return files


def _cases(files: dict[str, Path]) -> dict[str, tuple[Path, int | None]]:
    cases: dict[str, tuple[Path, int | None]] = {}
    for name, path in files.items():
        if name == "JPEG 2000":
            cases["JPEG 2000 full resolution"] = (path, None)
            cases["JPEG 2000 reduced (nightly)"] = (path, INPUT_SIZE)
        else:
            cases[name] = (path, INPUT_SIZE)
    return cases


def _decode_and_preprocess(path: Path, target: int | None) -> None:
    radiograph = read_radiograph(path, target_size=target)
    spacing = radiograph.meta.pixel_spacing_mm
    spacing_mm = spacing[0] * radiograph.decode_scale if spacing else None
    preprocess(radiograph.pixels, radiograph.meta.laterality, INPUT_SIZE, spacing_mm)


def run(quick: bool = False) -> dict[str, Any]:
    """Render, encode, then time decode alone and decode + preprocess per format."""
    torch.set_num_threads(1)
    repeats = 3 if quick else 7
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="koa-bench-decode-") as tmp:
        folder = Path(tmp)
        original = render_originals(folder, 1, seed=7, size_px=SIZE_PX)[0]
        cases = _cases(write_formats(original, folder))
        rows = []
        baseline = None
        for name, (path, target) in cases.items():
            decode = median_seconds(lambda p=path, t=target: read_radiograph(p, t), repeats)
            total = median_seconds(lambda p=path, t=target: _decode_and_preprocess(p, t), repeats)
            baseline = baseline or total
            size_mb = path.stat().st_size / 1e6
            rows.append(
                [
                    name,
                    f"{size_mb:.1f}",
                    f"{decode * 1e3:.0f}",
                    f"{total * 1e3:.0f}",
                    ratio(total, baseline),
                ]
            )
            figures[f"{name} ms"] = total * 1e3
    figures["table"] = table(
        f"Decode + preprocess, {SIZE_PX} px 12-bit knee, 1 thread, median of {repeats} "
        f"({machine()})",
        ["format", "MB", "decode ms", "decode+preprocess ms", "vs uncompressed"],
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
