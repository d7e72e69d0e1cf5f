"""koa never scores its own SR or SC: a night's manifest quarantines them, film passes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_checks.runner import run_suite
from koa_core.delivery.capture import build_capture
from koa_core.delivery.report import build_report
from koa_core.phantom.dicom import save_dicom
from koa_core.pipeline.manifest import build_manifest
from tests.checks.test_runner import manifest_row
from tests.core.delivery.films import film, film_header


def test_results_dropped_into_a_batch_are_quarantined_and_the_film_is_not(
    tmp_path: Path,
) -> None:
    scored = film(1)
    batch = tmp_path / "incoming" / "2026-11-27"
    save_dicom(film_header(1), batch / "film.dcm")
    build_report(scored).save_as(batch / "sr.dcm", enforce_file_format=True)
    build_capture(scored).save_as(batch / "sc.dcm", enforce_file_format=True)
    frame = pd.DataFrame(build_manifest(sorted(batch.iterdir())))
    result = run_suite(frame, "manifest")
    assert [Path(p).name for p in result.passed["source_path"]] == ["film.dcm"]
    reasons = {Path(p).name: r for p, r in result.quarantined[["source_path", "reasons"]].values}
    assert set(reasons) == {"sr.dcm", "sc.dcm"}
    assert (reasons["sr.dcm"], reasons["sc.dcm"]) == ("no_pixel_data", "colour_image")


@pytest.mark.parametrize("kind", ["SR", "SC"])
def test_the_own_output_rule_itself_recognises_each_result(kind: str) -> None:
    """Even a reader that decoded them would stop them: their header marks them as koa's."""
    scored = film(2)
    ds = build_report(scored) if kind == "SR" else build_capture(scored)
    header = {"manufacturer": ds.Manufacturer, "image_type": list(ds.get("ImageType", []))}
    result = run_suite(pd.DataFrame([manifest_row(kind, header)]), "manifest")
    assert result.passed.empty
    assert "koa_output" in result.quarantined["reasons"].iloc[0].split(";")
