"""Tests for data_checks.runner: real GX validation of manifests, model inputs and predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from data_checks import runner
from data_checks.runner import CheckResult, SuiteError, run_suite
from koa_core.imaging.statistics import input_statistics
from koa_core.imaging.transforms import preprocess

GOOD_DICOM: dict[str, Any] = {
    "file_format": "dicom",
    "rows": 2048,
    "columns": 1792,
    "bits_stored": 12,
    "photometric_interpretation": "MONOCHROME2",
    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.1",
    "patient_id": "p1",
    "study_date": "20260101",
    "modality": "DX",
    "body_part_examined": "KNEE",
    "view_position": "PA",
    "body_part_verdict": "knee",
    "view_verdict": "frontal",
    "laterality": "R",
    "pixel_spacing_row_mm": 0.15,
    "pixel_spacing_col_mm": 0.15,
    "image_type": ["ORIGINAL", "PRIMARY"],
    "manufacturer": "ACME",
    "sha256": "0" * 64,
    "size_bytes": 1000,
    "read_error": None,
}
GOOD_RASTER: dict[str, Any] = {
    "file_format": "png",
    "rows": 512,
    "columns": 512,
    "bits_stored": 8,
    "photometric_interpretation": "MONOCHROME2",
    "image_type": [],
    "body_part_verdict": "unknown",
    "view_verdict": "unknown",
    "read_error": None,
}

# Each row breaks exactly one manifest expectation: (label, changes, reason).
MANIFEST_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("modality_mr", {"modality": "MR"}, "modality_not_dx_cr"),
    ("modality_missing", {"modality": None}, "modality_not_dx_cr"),
    ("body_part_other", {"body_part_verdict": "other"}, "body_part_not_knee"),
    ("view_lateral", {"view_verdict": "not_frontal"}, "not_frontal_view"),
    ("derived", {"image_type": ["DERIVED", "SECONDARY"]}, "derived_image"),
    ("rows_small", {"rows": 100}, "rows_out_of_range"),
    ("rows_large", {"rows": 10_000}, "rows_out_of_range"),
    ("columns_small", {"columns": 64}, "columns_out_of_range"),
    ("bits_low", {"bits_stored": 6}, "bits_out_of_range"),
    ("bits_high", {"bits_stored": 32}, "bits_out_of_range"),
    ("spacing_fine", {"pixel_spacing_row_mm": 0.01}, "pixel_spacing_out_of_range"),
    ("spacing_coarse", {"pixel_spacing_col_mm": 2.0}, "pixel_spacing_out_of_range"),
    ("sop_missing", {"sop_instance_uid": None}, "sop_uid_missing"),
    ("study_missing", {"study_instance_uid": None}, "study_uid_missing"),
    ("series_missing", {"series_instance_uid": None}, "series_uid_missing"),
    ("koa_manufacturer", {"manufacturer": "Koa"}, "koa_output"),
    ("koa_image_type", {"image_type": ["ORIGINAL", "PRIMARY", "KOA"]}, "koa_output"),
    ("format_bmp", {"file_format": "bmp"}, "unknown_file_format"),
    ("raster_small", {"file_format": "png", "rows": 100}, "rows_out_of_range"),
]
# Rows that must pass: DICOM variants the suite accepts on purpose, and raster rows.
GOOD_CASES: list[tuple[str, dict[str, Any]]] = [
    ("dicom", {}),
    ("dicom_cr_ap", {"modality": "CR", "view_position": "AP"}),
    ("body_part_lowercase", {"body_part_examined": "knee"}),
    ("spacing_unknown", {"pixel_spacing_row_mm": None, "pixel_spacing_col_mm": None}),
    ("png", GOOD_RASTER),
    ("jpeg", {**GOOD_RASTER, "file_format": "jpeg", "bits_stored": 8}),
]


def manifest_row(label: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A manifest row with unique path and UIDs; raster rows drop the DICOM attributes."""
    changes = changes or {}
    if changes.get("file_format", "dicom") != "dicom":
        return {"source_path": f"/batch/{label}.img", **GOOD_RASTER, **changes}
    uids = {
        "sop_instance_uid": f"1.2.3.{label}",
        "study_instance_uid": f"1.2.4.{label}",
        "series_instance_uid": f"1.2.5.{label}",
    }
    return {"source_path": f"/batch/{label}.dcm", **GOOD_DICOM, **uids, **changes}


def manifest_frame() -> pd.DataFrame:
    rows = [manifest_row(label, changes) for label, changes in GOOD_CASES]
    rows += [manifest_row(label, changes) for label, changes, _ in MANIFEST_CASES]
    labels = [label for label, _ in GOOD_CASES] + [label for label, _, _ in MANIFEST_CASES]
    return pd.DataFrame(rows, index=pd.Index(labels, name="case"))


@pytest.fixture(scope="module", params=["default", "nullable"])
def manifest_result(request: pytest.FixtureRequest) -> CheckResult:
    """One validation of every manifest case, with numpy dtypes and with nullable dtypes."""
    frame = manifest_frame()
    return run_suite(frame if request.param == "default" else frame.convert_dtypes(), "manifest")


@pytest.mark.parametrize(("label", "changes", "reason"), MANIFEST_CASES, ids=lambda v: str(v))
def test_manifest_row_breaking_one_expectation_is_quarantined_with_its_reason(
    manifest_result: CheckResult, label: str, changes: dict[str, Any], reason: str
) -> None:
    assert manifest_result.quarantined.loc[label, "reasons"] == reason


@pytest.mark.parametrize(("label", "changes"), GOOD_CASES, ids=[case[0] for case in GOOD_CASES])
def test_manifest_good_rows_pass(
    manifest_result: CheckResult, label: str, changes: dict[str, Any]
) -> None:
    assert label in manifest_result.passed.index
    assert label not in manifest_result.quarantined.index


def test_manifest_split_covers_every_row_once(manifest_result: CheckResult) -> None:
    frame = manifest_frame()
    both = manifest_result.passed.index.union(manifest_result.quarantined.index)
    assert both.sort_values().equals(frame.index.sort_values())
    assert manifest_result.passed.index.intersection(manifest_result.quarantined.index).empty
    assert list(manifest_result.passed.columns) == list(frame.columns)
    assert not manifest_result.success
    stats = manifest_result.statistics
    assert stats["quarantined_rows"] == len(MANIFEST_CASES)
    assert stats["passed_rows"] + stats["quarantined_rows"] == stats["rows"] == len(frame)
    assert sum(stats["reasons"].values()) == len(MANIFEST_CASES)
    assert stats["successful_expectations"] < stats["evaluated_expectations"]


def test_row_breaking_several_expectations_gets_every_reason() -> None:
    bad = manifest_row("bad", {"modality": "MR", "rows": 100, "image_type": ["DERIVED"]})
    result = run_suite(pd.DataFrame([manifest_row("good"), bad]), "manifest")
    assert result.quarantined["reasons"].tolist() == [
        "derived_image;modality_not_dx_cr;rows_out_of_range"
    ]
    assert result.passed["source_path"].tolist() == ["/batch/good.dcm"]


def test_koa_secondary_capture_is_flagged_as_koa_output_and_derived() -> None:
    output = manifest_row(
        "koa", {"manufacturer": "koa", "image_type": ["DERIVED", "SECONDARY", "KOA"]}
    )
    result = run_suite(pd.DataFrame([output]), "manifest")
    assert result.quarantined["reasons"].tolist() == ["derived_image;koa_output"]


def test_duplicate_sop_uid_keeps_the_first_by_path() -> None:
    rows = [manifest_row(label, {"sop_instance_uid": "1.2.9.9"}) for label in ("c", "a", "b")] + [
        manifest_row("unique")
    ]
    result = run_suite(pd.DataFrame(rows, index=[10, 11, 12, 13]), "manifest")
    assert sorted(result.passed["source_path"]) == ["/batch/a.dcm", "/batch/unique.dcm"]
    assert sorted(result.quarantined.index) == [10, 12]
    assert set(result.quarantined["reasons"]) == {"duplicate_sop_uid"}


def test_read_error_rows_are_quarantined_with_their_error() -> None:
    unreadable = [
        {"source_path": f"/batch/{code}.dcm", "read_error": code, "read_error_detail": "x"}
        for code in ("truncated", "not_dicom")
    ]
    frame = pd.DataFrame([manifest_row("good"), *unreadable])
    result = run_suite(frame, "manifest")
    assert result.passed["source_path"].tolist() == ["/batch/good.dcm"]
    assert dict(
        zip(result.quarantined["source_path"], result.quarantined["reasons"], strict=True)
    ) == {
        "/batch/truncated.dcm": "truncated",
        "/batch/not_dicom.dcm": "not_dicom",
    }


def test_rows_come_back_as_dicts_with_none_for_missing_values() -> None:
    unreadable = {"source_path": "/batch/t.dcm", "read_error": "truncated"}
    result = run_suite(pd.DataFrame([manifest_row("good"), unreadable]), "manifest")
    (passed,), (refused,) = result.passed_rows(), result.quarantined_rows()
    assert passed["source_path"] == "/batch/good.dcm" and passed["read_error"] is None
    assert refused["reasons"] == "truncated" and refused["modality"] is None
    assert run_suite(pd.DataFrame([manifest_row("good")]), "manifest").quarantined_rows() == []


def test_batch_of_only_unreadable_files_needs_no_validation() -> None:
    frame = pd.DataFrame([{"source_path": "/batch/x.dcm", "read_error": "empty_file"}])
    result = run_suite(frame, "manifest")
    assert result.passed.empty
    assert result.quarantined["reasons"].tolist() == ["empty_file"]
    assert result.statistics["evaluated_expectations"] == 0


def test_image_size_limits_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from koa_core.config import get_settings

    frame = pd.DataFrame([manifest_row("mid", {"rows": 800, "columns": 800})])
    assert run_suite(frame, "manifest").success
    monkeypatch.setenv("KOA_MIN_IMAGE_PX", "1024")
    get_settings.cache_clear()
    result = run_suite(frame, "manifest")
    assert set(result.quarantined["reasons"]) == {"columns_out_of_range;rows_out_of_range"}


@pytest.mark.parametrize("suite_name", runner.SUITE_NAMES)
def test_empty_frame_gives_empty_split(suite_name: str) -> None:
    result = run_suite(pd.DataFrame({"a": pd.Series(dtype="float64")}), suite_name)
    assert result.passed.empty
    assert result.quarantined.empty
    assert "reasons" in result.quarantined.columns
    assert result.success


def test_unknown_suite_is_rejected() -> None:
    with pytest.raises(SuiteError, match="unknown suite"):
        run_suite(pd.DataFrame({"a": [1]}), "no_such_suite")


def test_missing_column_is_named() -> None:
    frame = pd.DataFrame([manifest_row("good")]).drop(columns=["view_verdict"])
    with pytest.raises(SuiteError, match="view_verdict"):
        run_suite(frame, "manifest")


def knee_like_image(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Two bright rounded bones on soft tissue with noise: a stand-in for a knee view."""
    v, u = np.mgrid[0:size, 0:size] / size
    femur = np.exp(-((((u - 0.5) / 0.22) ** 2 + ((v - 0.25) / 0.25) ** 2) ** 2))
    tibia = np.exp(-((((u - 0.5) / 0.2) ** 2 + ((v - 0.8) / 0.22) ** 2) ** 2))
    tissue = 0.2 * np.exp(-(((u - 0.5) / 0.4) ** 2))
    return (1000 * (femur + tibia + tissue) + rng.normal(0, 20, (size, size))).astype(np.float32)


# Each model input: (label, pixels in [0, 1], reasons or "" when it must pass).
def model_input_cases() -> list[tuple[str, np.ndarray, str]]:
    rng = np.random.default_rng(7)
    normal = preprocess(knee_like_image(rng), "L", 64).pixels
    saturated = np.clip(rng.uniform(0.3, 1.6, (64, 64)), 0.0, 1.0)
    nan_image = normal.copy()
    nan_image[0, 0] = np.nan
    overshoot = normal.copy()
    overshoot[0, :2] = [-0.1, 1.2]
    return [
        ("normal", normal, ""),
        ("blank", np.full((64, 64), 0.5), "blank_image"),
        ("saturated", saturated, "saturated_image"),
        ("too_dark", rng.uniform(0.0, 0.08, (64, 64)), "intensity_out_of_range"),
        ("too_bright", rng.uniform(0.92, 0.999, (64, 64)), "intensity_out_of_range"),
        ("not_finite", nan_image, "statistics_missing"),
        ("out_of_unit_range", overshoot, "pixels_out_of_unit_range"),
    ]


def test_model_input_statistics_quarantine_unusable_images() -> None:
    cases = model_input_cases()
    frame = pd.DataFrame(
        [input_statistics(pixels) for _, pixels, _ in cases], index=[label for label, _, _ in cases]
    )
    result = run_suite(frame, "model_input")
    expected = {label: reason for label, _, reason in cases if reason}
    assert result.quarantined["reasons"].to_dict() == expected
    assert list(result.passed.index) == ["normal"]


def predictions_frame(n: int = 6) -> pd.DataFrame:
    """Consistent predictions: softmax probabilities, argmax grade, p_koa from KL 2-4."""
    logits = np.random.default_rng(3).normal(0, 2, (n, 5))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame(probabilities, columns=list(runner.PROBABILITY_COLUMNS))
    frame["kl_grade"] = probabilities.argmax(axis=1)
    frame["p_koa"] = probabilities[:, 2:].sum(axis=1)
    frame["model_version"] = "kl-cnn-1"
    return frame


def break_prediction(frame: pd.DataFrame, row: int, fault: str) -> None:
    if fault == "probability_out_of_range":
        frame.loc[row, list(runner.PROBABILITY_COLUMNS)] = [-0.1, 0.5, 0.2, 0.2, 0.2]
        frame.loc[row, ["kl_grade", "p_koa"]] = [1, 0.6]
    elif fault == "probabilities_not_summing_to_one":
        frame.loc[row, list(runner.PROBABILITY_COLUMNS)] *= 0.9
        frame.loc[row, "p_koa"] *= 0.9
    elif fault == "grade_not_argmax":
        frame.loc[row, "kl_grade"] = (frame.loc[row, "kl_grade"] + 1) % 5
    elif fault == "p_koa_inconsistent":
        frame.loc[row, "p_koa"] += 0.01
    elif fault == "model_version_missing":
        frame.loc[row, "model_version"] = None


PREDICTION_FAULTS = [
    "probability_out_of_range",
    "probabilities_not_summing_to_one",
    "grade_not_argmax",
    "p_koa_inconsistent",
    "model_version_missing",
]


@pytest.fixture(scope="module")
def predictions_result() -> CheckResult:
    """One validation of a table whose row ``i + 1`` carries ``PREDICTION_FAULTS[i]``."""
    frame = predictions_frame(len(PREDICTION_FAULTS) + 2)
    for row, fault in enumerate(PREDICTION_FAULTS, start=1):
        break_prediction(frame, row, fault)
    return run_suite(frame, "predictions")


@pytest.mark.parametrize(("row", "fault"), list(enumerate(PREDICTION_FAULTS, start=1)))
def test_inconsistent_prediction_is_quarantined(
    predictions_result: CheckResult, row: int, fault: str
) -> None:
    assert predictions_result.quarantined.loc[row, "reasons"] == fault


def test_consistent_predictions_pass(predictions_result: CheckResult) -> None:
    assert list(predictions_result.passed.index) == [0, len(PREDICTION_FAULTS) + 1]
    assert "p_sum" not in predictions_result.passed.columns
    assert run_suite(predictions_frame(), "predictions").success


def test_data_docs_are_built_for_a_run(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    frame = predictions_frame()
    break_prediction(frame, 0, "grade_not_argmax")
    result = run_suite(frame, "predictions", data_docs_dir=docs, run_name="night-1")
    assert result.docs_path == docs / "index.html"
    assert result.docs_path.is_file()
    assert (docs / "validations" / "predictions" / "night-1").is_dir()
    assert result.quarantined["reasons"].tolist() == ["grade_not_argmax"]
