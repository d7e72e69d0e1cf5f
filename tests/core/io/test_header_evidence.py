"""Body part and view verdicts from real DICOM headers, as PACS exports write them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from koa_core.config import Settings
from koa_core.io.header_evidence import header_verdict
from koa_core.io.reader import read_metadata
from koa_core.phantom.anatomy import render_knee
from koa_core.phantom.dicom import knee_dataset, save_dicom


def _film(tmp_path: Path, **header: str | None) -> Path:
    image = render_knee(1, "R", seed=3, rows=300, columns=300, spacing_mm=0.5)
    ds: Dataset = knee_dataset(image, key=(3,), patient_id="P3", study_date=date(2026, 1, 1))
    for keyword, value in header.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / "film.dcm"
    save_dicom(ds, path)
    return path


@pytest.mark.parametrize(
    ("header", "body_part", "evidence"),
    [
        ({"BodyPartExamined": "KNEE"}, "knee", "header"),
        ({"BodyPartExamined": "knee"}, "knee", "header"),
        ({"BodyPartExamined": None}, "unknown", None),
        (
            {"BodyPartExamined": "LEG", "StudyDescription": "XR KNEE BILAT STANDING"},
            "knee",
            "description",
        ),
        ({"BodyPartExamined": "LOWER LIMB"}, "unknown", None),
        (
            {"BodyPartExamined": "EXTREMITY", "SeriesDescription": "Genou face"},
            "knee",
            "description",
        ),
        (
            {"BodyPartExamined": None, "ProtocolName": "Knie beidseits stehend"},
            "knee",
            "description",
        ),
        ({"BodyPartExamined": "GENOU"}, "knee", "header"),
        # A header naming another body part wins over a description that says knee.
        ({"BodyPartExamined": "CHEST", "StudyDescription": "XR KNEE"}, "other", "header"),
    ],
)
def test_body_part_verdict(
    tmp_path: Path, header: dict[str, str | None], body_part: str, evidence: str | None
) -> None:
    verdict = header_verdict(read_metadata(_film(tmp_path, **header)), Settings())
    assert (verdict.body_part, verdict.body_part_evidence) == (body_part, evidence)


@pytest.mark.parametrize(
    ("header", "view", "evidence"),
    [
        ({"ViewPosition": "PA"}, "frontal", "header"),
        ({"ViewPosition": "AP"}, "frontal", "header"),
        ({"ViewPosition": "LL"}, "not_frontal", "header"),
        ({"ViewPosition": "LATERAL"}, "not_frontal", "header"),
        ({"ViewPosition": None}, "unknown", None),
        (
            {"ViewPosition": None, "StudyDescription": "XR KNEE BILAT STANDING"},
            "frontal",
            "description",
        ),
        (
            {"ViewPosition": None, "SeriesDescription": "Knie seitlich"},
            "not_frontal",
            "description",
        ),
        ({"ViewPosition": None, "SeriesDescription": "KNEE SKYLINE"}, "not_frontal", "description"),
        # A two-view description names both: it says nothing about this image.
        ({"ViewPosition": None, "StudyDescription": "XR KNEE AP AND LAT"}, "unknown", None),
    ],
)
def test_view_verdict(
    tmp_path: Path, header: dict[str, str | None], view: str, evidence: str | None
) -> None:
    verdict = header_verdict(read_metadata(_film(tmp_path, **header)), Settings())
    assert (verdict.view, verdict.view_evidence) == (view, evidence)


def test_site_patterns_are_settings(tmp_path: Path) -> None:
    path = _film(tmp_path, BodyPartExamined=None, StudyDescription="RTG KOLENA")
    assert header_verdict(read_metadata(path), Settings()).body_part == "unknown"
    site = Settings(knee_text_pattern=r"(?i)\bkolena\b")
    assert header_verdict(read_metadata(path), site).body_part == "knee"
