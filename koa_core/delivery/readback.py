"""Read koa's values back out of one of its structured reports (highdicom's TID 1500 API)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from koa_core.delivery import codes as koa_codes
from koa_core.delivery.report import KneeGroup
from koa_core.errors import ResultBuildError

_SIDES = {code.value: side for side, code in koa_codes.LATERALITY.items()}


@dataclass(frozen=True)
class ReportedKnee:
    """One knee as an SR reports it (compare with ``KneeFinding`` or a scores row)."""

    side: str
    kl_grade: int
    probabilities: tuple[float, ...]
    p_koa: float
    grade_set: tuple[int, ...]
    refer: bool
    refer_reason: str | None
    algorithm_name: str
    algorithm_version: str
    algorithm_parameters: tuple[str, ...]


def read_report(dataset: Dataset) -> tuple[ReportedKnee, ...]:
    """The knees of a koa SR, in document order.

    Raises:
        ResultBuildError: Not a TID 1500 report, or a group without koa's content.
    """
    try:
        report = hd.sr.Comprehensive3DSR.from_dataset(dataset).content
        if not isinstance(report, hd.sr.MeasurementReport):
            raise ValueError("the document is not a TID 1500 measurement report")
        groups: Sequence[KneeGroup] = [
            *report.get_planar_roi_measurement_groups(),
            *report.get_image_measurement_groups(),
        ]
        return tuple(_knee(group) for group in groups)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise ResultBuildError(f"not a koa structured report: {exc}") from exc


def _knee(group: KneeGroup) -> ReportedKnee:
    laterality = group.finding_sites[0].laterality
    algorithm = _texts(group, codes.DCM.AlgorithmName, codes.DCM.AlgorithmVersion)
    return ReportedKnee(
        side=_SIDES[laterality.value if laterality is not None else ""],
        kl_grade=_grades(group, koa_codes.KL_GRADE)[0],
        probabilities=tuple(_number(group, code) for code in koa_codes.P_KL_CODES),
        p_koa=_number(group, koa_codes.P_KOA),
        grade_set=tuple(sorted(_grades(group, koa_codes.GRADE_IN_SET))),
        refer=_coded(group, koa_codes.REFER)[0] == koa_codes.YES.value,
        refer_reason=next(iter(_texts(group, koa_codes.REFER_REASON)), None),
        algorithm_name=algorithm[0],
        algorithm_version=algorithm[1],
        algorithm_parameters=tuple(_texts(group, codes.DCM.AlgorithmParameters)),
    )


def _coded(group: KneeGroup, name: Code) -> list[str]:
    items = group.get_qualitative_evaluations(name)
    return [str(item[0].ConceptCodeSequence[0].CodeValue) for item in items]


def _grades(group: KneeGroup, name: Code) -> list[int]:
    return [koa_codes.grade_of(value) for value in _coded(group, name)]


def _number(group: KneeGroup, name: Code) -> float:
    (measurement,) = group.get_measurements(name)
    return float(measurement.value)


def _texts(group: KneeGroup, *names: Code) -> list[str]:
    found = []
    for name in names:
        items = hd.sr.utils.find_content_items(
            group[0], name=name, value_type=hd.sr.ValueTypeValues.TEXT
        )
        found += [str(item.TextValue) for item in items]
    return found
