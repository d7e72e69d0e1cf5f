"""dciodvfy (Debian's dicom3tools) finds no errors in the SR and the SC koa writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from koa_core.delivery.capture import build_capture
from koa_core.delivery.findings import FilmFindings
from koa_core.delivery.report import build_report
from tests.core.delivery.films import film, film_header, knee

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(
    DCIODVFY is None,
    reason="dciodvfy is not installed (Debian package dicom3tools; "
    "scripts/install-system-deps.sh installs it for make test)",
)


def _errors(ds: Dataset, path: Path) -> list[str]:
    ds.save_as(path, enforce_file_format=True)
    assert DCIODVFY is not None
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    # The IOD name comes first; every finding is "Error - ..." or "Warning - ...".
    assert lines and not lines[0].startswith("Error"), lines
    return [line for line in lines if line.startswith("Error")]


def _no_spacing() -> Dataset:
    header = film_header(2)
    del header.PixelSpacing, header.ImagerPixelSpacing
    return header


@pytest.mark.parametrize(
    "scored",
    [film(1), film(2, header=_no_spacing()), film(3, knees=(knee("L", 4, refer=True),))],
    ids=["two-knees", "no-spacing", "one-knee"],
)
def test_sr_and_sc_have_no_dciodvfy_errors(scored: FilmFindings, tmp_path: Path) -> None:
    assert _errors(build_report(scored), tmp_path / "sr.dcm") == []
    assert _errors(build_capture(scored), tmp_path / "sc.dcm") == []


def test_the_check_catches_an_error(tmp_path: Path) -> None:
    """The check can fail: an SC without (0008,0064) ConversionType (Type 1) is flagged."""
    sc = build_capture(film(4))
    del sc.ConversionType  # Type 1 in the SC Equipment module
    assert _errors(sc, tmp_path / "broken.dcm")
