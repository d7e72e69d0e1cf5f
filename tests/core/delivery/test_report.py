"""The structured report: TID 1500 in the film's study, each knee's values read back equal."""

from __future__ import annotations

import dataclasses
import io

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from koa_core.delivery import codes as koa_codes
from koa_core.delivery import report as report_module
from koa_core.delivery.encoding import part10_bytes
from koa_core.delivery.readback import read_report
from koa_core.delivery.report import build_report
from koa_core.errors import ResultBuildError
from tests.core.delivery.films import ALGORITHM, film, film_header, knee


def _round_trip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("side", ["R", "L"])
@pytest.mark.parametrize("grade", range(5))
def test_each_knee_reads_back_with_its_values(side: str, grade: int) -> None:
    refer = (grade + (side == "L")) % 2 == 1  # each side both referred and not
    finding = knee(side, grade, refer)
    (reported,) = read_report(_round_trip(build_report(film(1, knees=(finding,)))))
    assert reported.side == side
    assert reported.kl_grade == grade
    assert reported.probabilities == pytest.approx(finding.probabilities)
    assert reported.p_koa == pytest.approx(finding.p_koa)
    assert reported.grade_set == finding.grade_set
    assert reported.refer is refer
    assert reported.refer_reason == finding.refer_reason


def test_report_lives_in_the_films_study_in_a_new_series_and_references_it() -> None:
    scored = film(2)
    sr = _round_trip(build_report(scored))
    source = scored.source
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID not in (source.SeriesInstanceUID, "")
    assert (sr.PatientID, sr.PatientName, sr.AccessionNumber) == (
        source.PatientID,
        source.PatientName,
        source.AccessionNumber,
    )
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.Manufacturer == "koa"
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99KOA"


def test_each_knee_is_a_knee_joint_finding_with_its_laterality_and_roi() -> None:
    sr = hd.sr.Comprehensive3DSR.from_dataset(_round_trip(build_report(film(3))))
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    for group, side in zip(groups, ("R", "L"), strict=True):
        (site,) = group.finding_sites
        assert site.value.value == codes.SCT.KneeJoint.value == "49076000"
        assert site.laterality.value == koa_codes.LATERALITY[side].value
        assert group.finding_type.value == codes.SCT.KneeJoint.value
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        points = region.value
        # 60 mm at 0.5 mm/px around the joint centre (pixel centres at +0.5)
        assert points[:, 0].max() - points[:, 0].min() == pytest.approx(120.0)
        assert points[:, 1].min() == pytest.approx(150.5 - 60.0)


def test_algorithm_identification_names_model_localizer_and_weights() -> None:
    reported = read_report(build_report(film(4)))
    for knee_report in reported:
        assert knee_report.algorithm_name == ALGORITHM.name
        assert ALGORITHM.model_version in knee_report.algorithm_version
        assert ALGORITHM.localizer_version in knee_report.algorithm_version
        parameters = " ".join(knee_report.algorithm_parameters)
        assert ALGORITHM.weights_sha256 in parameters
        assert ALGORITHM.localizer_sha256 in parameters
        assert ALGORITHM.version in parameters


def test_uids_derive_from_the_film_and_model_version() -> None:
    first, again = build_report(film(5)), build_report(film(5))
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
        again.SOPInstanceUID,
        again.SeriesInstanceUID,
    )
    other_film = build_report(film(6))
    assert other_film.SOPInstanceUID != first.SOPInstanceUID
    new_model = build_report(film(5, algorithm=dataclasses.replace(ALGORITHM, model_version="v8")))
    assert new_model.SOPInstanceUID != first.SOPInstanceUID
    assert new_model.SeriesInstanceUID != first.SeriesInstanceUID


def test_a_film_without_pixel_spacing_references_the_image_instead_of_a_region() -> None:
    header = film_header(7)
    del header.PixelSpacing, header.ImagerPixelSpacing
    sr = build_report(film(7, header=header))
    content = hd.sr.Comprehensive3DSR.from_dataset(_round_trip(sr)).content
    assert content.get_planar_roi_measurement_groups() == []
    groups = content.get_image_measurement_groups()
    assert len(groups) == 2
    for group in groups:
        assert group.source_images[0].referenced_sop_instance_uid == header.SOPInstanceUID
    assert [k.side for k in read_report(sr)] == ["R", "L"]


def test_a_header_missing_type2_attributes_still_reports() -> None:
    header = film_header(8)
    del header.PatientName, header.AccessionNumber, header.StudyID
    sr = _round_trip(build_report(film(8, header=header)))
    assert sr.PatientName == "" and sr.AccessionNumber == ""


@pytest.mark.parametrize(
    "change",
    [
        {"side": "B"},
        {"kl_grade": 5},
        {"grade_set": (2, 7)},
        {"probabilities": (0.5, 0.5)},
        {"p_koa": 1.5},
    ],
    ids=lambda change: next(iter(change)),
)
def test_knees_that_cannot_be_reported_raise_a_named_error(change: dict[str, object]) -> None:
    bad = dataclasses.replace(knee("R", 2), **change)
    with pytest.raises(ResultBuildError):
        build_report(film(9, knees=(bad,)))


def test_a_report_of_something_else_is_refused() -> None:
    with pytest.raises(ResultBuildError):
        read_report(film_header(10))


def _encoded(ds: Dataset) -> bytes:
    # The build's clock, not its content.
    ds.ContentDate = ds.InstanceCreationDate = "20261127"
    ds.ContentTime = ds.InstanceCreationTime = "120000"
    for item in ds.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = "20261127120000"
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "knees",
    [
        None,  # two knees, one referred with a reason
        (knee("L", 4, True),),  # a KL4 set cannot widen upwards: referred without a reason
        (knee("R", 0),),
    ],
)
def test_the_report_is_the_file_highdicom_builds_from_the_whole_tree(
    knees: tuple | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    scored = film(12, knees=knees)
    fast = _encoded(build_report(scored))
    # highdicom's own way: the whole tree handed to the document constructor.
    monkeypatch.setattr(report_module, "_bare", lambda root: root)
    assert fast == _encoded(build_report(scored))


def test_reports_sharing_the_nights_algorithm_items_are_those_a_cold_build_gives() -> None:
    first, second = film(13), film(14, knees=(knee("L", 2, True),))
    warm_first = build_report(first)
    part10_bytes(warm_first)  # swaps the shared items' code sequences for a while
    warm_second = _encoded(build_report(second))
    report_module.algorithm_identification.cache_clear()
    report_module._observation_context.cache_clear()
    assert warm_second == _encoded(build_report(second))
    assert _encoded(warm_first) == _encoded(build_report(first))
