"""Shared helpers for the benchmarks: timing by medians, the machine, tables, test images.

Every figure a benchmark prints is the median of repeats, and every ratio compares two
figures measured in the same process a moment apart (interleaved where it matters),
because the 2-core machine these run on is shared and its speed drifts by 2x.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("DO_NOT_TRACK", "1")

BENCH_DATE = date(2026, 1, 15)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine: CPU, cores, ISA features that decide the fast path."""
    from koa_core.model.inference import cpu_has_fast_bf16

    isa = torch.backends.cpu.get_cpu_capability()
    bf16 = "native bf16" if cpu_has_fast_bf16() else "no native bf16"
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({isa}, {bf16})"


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of each run, calling them round-robin so drift hits all alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_gflops(dtype: torch.dtype, size: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of a ``size`` x ``size`` matmul: the roofline a convolution net can reach."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    seconds = median_seconds(lambda: torch.mm(a, b), repeats)
    return 2 * size**3 / seconds / 1e9


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table (also valid Markdown), printed and returned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = [
        f"\n### {title}\n",
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def render_originals(out: Path, n: int, seed: int, size_px: int = 2048) -> list[Path]:
    """``n`` distinct phantom knees as ``size_px`` square, uncompressed DICOM files."""
    from koa_core.phantom import knee_dataset, render_knee, save_dicom

    paths = []
    for index in range(n):
        image = render_knee(
            index % 5,
            "L" if index % 2 else "R",
            seed * 100_000 + index,
            rows=size_px,
            columns=size_px,
            spacing_mm=0.14,
        )
        ds = knee_dataset(
            image, key=(seed, index), patient_id=f"BENCH{index:05d}", study_date=BENCH_DATE
        )
        path = out / f"original-{index:05d}.dcm"
        save_dicom(ds, path, "explicit")
        paths.append(path)
    return paths


def replicate(originals: Sequence[Path], out: Path, n: int) -> list[Path]:
    """``n`` DICOM files under ``out/<date>/`` cycling through ``originals``.

    Rendering a 2048 px phantom takes ~0.7 s, so thousands of inputs are copies of a few
    dozen renders, each with new SOP/Study/Series instance UIDs and patient id: distinct
    instances to the manifest checks (which flag duplicate UIDs), the same pixels to the
    decoder and the network, whose cost does not depend on the content.
    """
    folder = out / BENCH_DATE.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n):
        source = originals[index % len(originals)]
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID = f"BENCH{index:06d}"
        path = folder / f"{index:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def reset_dir(path: Path) -> Path:
    """An empty directory at ``path``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def ratio(value: float, reference: float) -> str:
    """``value / reference`` as ``1.23x``."""
    return f"{value / reference:.2f}x" if reference else "n/a"


def fit_r2(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line through (x, y): slope, intercept and R^2."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    predicted = slope * np.asarray(x, float) + intercept
    residual = float(np.sum((np.asarray(y, float) - predicted) ** 2))
    total = float(np.sum((np.asarray(y, float) - np.mean(y)) ** 2))
    return float(slope), float(intercept), 1.0 - residual / total if total else 1.0
