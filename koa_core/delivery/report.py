"""The structured report of one film: a TID 1500 measurement report, one group per knee.

Each knee is a TID 1410 planar ROI group (a TID 1501 group referencing the source image
when the film has no pixel spacing to size the ROI) holding: finding site knee joint
with its laterality; the KL grade, each grade of the prediction set and the refer flag
as coded qualitative evaluations (``99KOA``, see ``koa_core.delivery.codes``); the reason
for referral as a text evaluation; P(KOA) and P(KL=n) as numeric measurements; and the
algorithm (TID 4019: name, model and localizer versions, weights SHA-256s). The document
is a Comprehensive 3D SR in the film's study, with VerificationFlag UNVERIFIED.
"""

from __future__ import annotations

from functools import lru_cache

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from koa_core.delivery import codes as koa_codes
from koa_core.delivery import uids
from koa_core.delivery.findings import Algorithm, FilmFindings, KneeFinding
from koa_core.errors import ResultBuildError
from koa_core.schema import GRADES, NUM_CLASSES

MANUFACTURER = "koa"  # the own-output marker data_checks' manifest suite refuses
SR_SERIES_NUMBER = 9901
SR_SERIES_DESCRIPTION = "koa KL grades (AI, unverified)"
CONTENT_SEQUENCE = 0x0040A730
# highdicom reads these from the evidence; a PACS may leave Type 2 attributes out.
_TYPE2_FROM_SOURCE = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


class TextEvaluation(hd.sr.QualitativeEvaluation):
    """A TEXT qualitative evaluation (TID 1501 allows CODE or TEXT; highdicom builds CODE)."""

    def __init__(self, name: hd.sr.CodedConcept | Code, value: str) -> None:
        item = hd.sr.TextContentItem(
            name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
        hd.sr.templates.Template.__init__(self, [item])


def build_report(film: FilmFindings) -> Dataset:
    """The SR of one film, in its study, with UIDs derived from the film and model version.

    A plain dataset holding the Comprehensive 3D SR (``hd.sr.Comprehensive3DSR.from_dataset``
    reads it as highdicom's class).

    Raises:
        ResultBuildError: A knee whose values cannot be reported (bad side, grade,
            probabilities or set) or a source header highdicom cannot use.
    """
    for knee in film.knees:
        _check_knee(knee)
    source = evidence_header(film.source)
    version = film.algorithm.model_version
    groups = [_knee_group(source, knee, film.algorithm) for knee in film.knees]
    try:
        report = hd.sr.MeasurementReport(
            observation_context=_observation_context(film.algorithm),
            procedure_reported=codes.SCT.PlainRadiography,
            imaging_measurements=groups,
            title=codes.DCM.ImagingMeasurementReport,
        )
        root = report[0]
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source],
            content=_bare(root),
            series_instance_uid=uids.series_uid(uids.SR, source.StudyInstanceUID, version),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=uids.instance_uid(uids.SR, source.SOPInstanceUID, version),
            instance_number=int(source.get("InstanceNumber") or 1),
            manufacturer=MANUFACTURER,
            is_complete=True,
            is_verified=False,
            series_description=SR_SERIES_DESCRIPTION,
            software_versions=film.algorithm.version,
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise ResultBuildError(f"SR for {source.get('SOPInstanceUID')}: {exc}") from exc
    document = Dataset(sr)
    document.file_meta = sr.file_meta
    document.ContentSequence = root.ContentSequence
    document.CodingSchemeIdentificationSequence = [koa_codes.scheme_identification()]
    return document


def _bare(root: Dataset) -> Dataset:
    """The report's root container without its tree, for the document constructor.

    highdicom's constructor deep-copies, re-parses and searches the whole tree it is given
    (28 of the 40 ms a bilateral film's SR took, AMD EPYC, one thread), to check that every
    image it references is in the evidence. This tree was just built here and references
    the source film only, which is the evidence, so the document is built around the bare
    root and the tree attached to it after (a test checks the two give the same file).
    """
    bare = Dataset({tag: element for tag, element in root.items() if tag != CONTENT_SEQUENCE})
    bare.ContentSequence = []
    return bare


def evidence_header(source: Dataset) -> Dataset:
    """A pixel-free copy of the film's header with the Type 2 attributes highdicom copies.

    Raises:
        ResultBuildError: No (0020,000D) StudyInstanceUID or (0008,0018) SOPInstanceUID.
    """
    header = Dataset({tag: element for tag, element in source.items() if tag < 0x7FE00000})
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not header.get(keyword):
            raise ResultBuildError(f"the source film has no {keyword}")
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _check_knee(knee: KneeFinding) -> None:
    problems = []
    if knee.side not in koa_codes.LATERALITY:
        problems.append(f"side {knee.side!r} is not 'R' or 'L'")
    if knee.kl_grade not in GRADES or not set(knee.grade_set) <= set(GRADES):
        problems.append(f"grade {knee.kl_grade} or set {knee.grade_set} outside 0-4")
    values = (*knee.probabilities, knee.p_koa)
    if len(knee.probabilities) != NUM_CLASSES or not all(0.0 <= p <= 1.0 for p in values):
        problems.append(f"probabilities {knee.probabilities}, P(KOA) {knee.p_koa}")
    if problems:
        raise ResultBuildError(f"knee {knee.side}: " + "; ".join(problems))


KneeGroup = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
)


def _knee_group(source: Dataset, knee: KneeFinding, algorithm: Algorithm) -> KneeGroup:
    tracking = hd.sr.TrackingIdentifier(
        uid=uids.tracking_uid(source.SOPInstanceUID, algorithm.model_version, knee.side),
        identifier=f"{'right' if knee.side == 'R' else 'left'} knee",
    )
    content = {
        "tracking_identifier": tracking,
        "finding_type": koa_codes.KNEE_JOINT,
        "algorithm_id": algorithm_identification(algorithm),
        "finding_sites": [
            hd.sr.FindingSite(koa_codes.KNEE_JOINT, laterality=koa_codes.LATERALITY[knee.side])
        ],
        "measurements": _measurements(knee),
        "qualitative_evaluations": _evaluations(knee),
    }
    region = _roi_region(source, knee)
    if region is None:
        image = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
        return hd.sr.MeasurementsAndQualitativeEvaluations(source_images=[image], **content)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **content)


@lru_cache(maxsize=8)
def algorithm_identification(algorithm: Algorithm) -> hd.sr.AlgorithmIdentification:
    """TID 4019: koa's name, model and localizer versions; koa and weights as parameters.

    The same for every knee of a night: built once and shared (read-only) by the reports.
    """
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=f"model {algorithm.model_version}; localizer {algorithm.localizer_version}",
        parameters=[
            f"koa {algorithm.version}",
            f"model weights SHA-256 {algorithm.weights_sha256}",
            f"localizer weights SHA-256 {algorithm.localizer_sha256}",
        ],
    )


def _measurements(knee: KneeFinding) -> list[hd.sr.Measurement]:
    named = [(koa_codes.P_KOA, knee.p_koa)]
    named += list(zip(koa_codes.P_KL_CODES, knee.probabilities, strict=True))
    return [
        hd.sr.Measurement(name=name, value=float(value), unit=koa_codes.PROBABILITY_UNIT)
        for name, value in named
    ]


def _evaluations(knee: KneeFinding) -> list[hd.sr.QualitativeEvaluation]:
    evaluations = [
        hd.sr.QualitativeEvaluation(koa_codes.KL_GRADE, koa_codes.KL_CODES[knee.kl_grade])
    ]
    evaluations += [
        hd.sr.QualitativeEvaluation(koa_codes.GRADE_IN_SET, koa_codes.KL_CODES[member])
        for member in sorted(set(knee.grade_set))
    ]
    flag = koa_codes.YES if knee.refer else koa_codes.NO
    evaluations.append(hd.sr.QualitativeEvaluation(koa_codes.REFER, flag))
    if knee.refer_reason:
        evaluations.append(TextEvaluation(koa_codes.REFER_REASON, knee.refer_reason))
    return evaluations


def _roi_region(source: Dataset, knee: KneeFinding) -> hd.sr.ImageRegion | None:
    """The knee's square ROI as a closed POLYLINE in image coordinates, if it can be sized.

    SCOORD puts (0, 0) at the top-left corner of the top-left pixel, so the centre of
    numpy pixel (row, column) is (column + 0.5, row + 0.5). The side in pixels comes from
    (0028,0030) PixelSpacing, else (0018,1164) ImagerPixelSpacing.
    """
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    if not spacing:
        return None
    half_rows, half_cols = (knee.roi_mm / 2.0 / float(mm) for mm in spacing[:2])
    x, y = knee.joint_x + 0.5, knee.joint_y + 0.5
    width = float(source.get("Columns") or x + half_cols)
    height = float(source.get("Rows") or y + half_rows)
    left, right = max(x - half_cols, 0.0), min(x + half_cols, width)
    top, bottom = max(y - half_rows, 0.0), min(y + half_rows, height)
    corners = [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array(corners, dtype=np.float64),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )


@lru_cache(maxsize=8)
def _observation_context(algorithm: Algorithm) -> hd.sr.ObservationContext:
    """The device observer (koa), the same for every report of a night: built once."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uids.device_uid(algorithm.name),
        name=algorithm.name,
        manufacturer_name=MANUFACTURER,
        model_name=algorithm.model_version,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
