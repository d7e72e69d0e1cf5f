"""A night's ledger: what became of each input, as typed score and quarantine records.

Every input of a batch ends up in exactly one of two tables: ``scores`` (one row per knee
found on it) or ``quarantine`` (one row per input that could not be scored, with its reasons).
``NightLedger`` collects both from every stage and ``account`` checks that promise before
anything is written. Rows name their input by ``source_path``, free of patient identifiers
(``koa_core.pipeline.source_paths``); ``real_paths`` maps it back for the operators.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from koa_core.config import Settings
from koa_core.delivery.uids import SR, instance_uid
from koa_core.errors import KoaError
from koa_core.imaging.transforms import PREPROCESS_VERSION
from koa_core.pipeline.manifest import READ_ERROR_DETAIL
from koa_core.pipeline.source_paths import SourceIdentity, source_paths
from koa_core.privacy import Redactor, patient_key, site_secret
from koa_core.schema import GRADES, PROBABILITY_COLUMNS
from koa_core.sources.listing import BatchListing
from koa_core.storage.results import SCORES_SCHEMA_VERSION


class AccountingError(KoaError):
    """Inputs that are neither scored nor quarantined, or that are both (a bug, never data)."""


@dataclass(frozen=True)
class RunContext:
    """What every row of one run shares."""

    batch_date: date
    run_id: str
    model_version: str
    weights_sha256: str
    localizer_version: str

    def log_dir(self, runs_dir: Path) -> Path:
        """The run's own folder, for operators only: ``<runs_dir>/YYYY-MM-DD/<run id>``."""
        return runs_dir / self.batch_date.isoformat() / self.run_id


@dataclass(frozen=True)
class QuarantineRecord:
    """One input that could not be scored: where it stopped, and why.

    ``detail`` is raw: it may quote header values, so it is redacted on its way out.
    """

    origin: str
    sha256: str | None
    stage: str
    reasons: str
    detail: str | None
    quarantined_at: datetime

    @classmethod
    def of_row(cls, row: Mapping[str, Any], stage: str, at: datetime) -> QuarantineRecord:
        """The record of a pipeline row that failed ``stage``.

        Args:
            row: Needs ``origin`` and ``reasons``; ``sha256`` and ``read_error_detail``
                (set by the manifest and by ``prepare``, None after them) may be missing.
            stage: One of ``koa_core.storage.results.QUARANTINE_STAGES``.
            at: When it was quarantined.
        """
        detail = row.get(READ_ERROR_DETAIL)
        return cls(row["origin"], row.get("sha256"), stage, row["reasons"], detail, at)

    def to_row(self, run: RunContext, source_path: str, redactor: Redactor) -> dict[str, Any]:
        """Its ``quarantine`` table row, the detail redacted."""
        return {
            "batch_date": run.batch_date,
            "source_path": source_path,
            "source_sha256": self.sha256,
            "stage": self.stage,
            "reasons": self.reasons,
            "detail": redactor(self.detail) if self.detail is not None else None,
            "run_id": run.run_id,
            "quarantined_at": self.quarantined_at,
        }


@dataclass(frozen=True)
class KneeLocation:
    """Which knee of a film a score is for, where it is, and what said so."""

    side: str
    joint_x: float
    joint_y: float
    roi_mm: float
    localizer_score: float
    evidence: str
    box: tuple[float, ...] = ()
    """(row start, row stop, column start, column stop) of the ROI in stored pixels."""

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> KneeLocation:
        """From a prepared row (``koa_core.pipeline.prepare`` knee columns)."""
        return cls(
            side=row["knee_side"],
            joint_x=float(row["joint_x"]),
            joint_y=float(row["joint_y"]),
            roi_mm=float(row["roi_mm"]),
            localizer_score=float(row["localizer_score"]),
            evidence=row["knee_evidence"],
            box=tuple(float(value) for value in row.get("roi_box", ())),
        )


@dataclass(frozen=True)
class ScoreRecord:
    """One scored knee: its film's identity, the knee, the model's output, input statistics."""

    origin: str
    sha256: str
    file_format: str
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    patient_key: str | None
    laterality: str | None
    knee: KneeLocation
    flipped: bool
    probabilities: tuple[float, ...]
    kl_grade: int
    p_koa: float
    input_mean: float
    input_std: float
    scored_at: datetime
    grade_set: tuple[int, ...]
    refer: bool
    refer_reason: str | None
    sr_sop_instance_uid: str | None
    heatmap: tuple[str, int] | None = None
    """(file, index) of the knee's class-activation map, when the run made heatmaps."""

    @classmethod
    def of_prediction(cls, row: Mapping[str, Any], settings: Settings, at: datetime) -> ScoreRecord:
        """The record of a scored row (``score_chunk`` output that passed the checks)."""
        return cls(
            origin=row["origin"],
            sha256=row["sha256"],
            file_format=row["file_format"],
            sop_instance_uid=row.get("sop_instance_uid"),
            study_instance_uid=row.get("study_instance_uid"),
            series_instance_uid=row.get("series_instance_uid"),
            patient_key=patient_key(row.get("patient_id"), settings),
            laterality=row.get("laterality"),
            knee=KneeLocation.of_row(row),
            flipped=bool(row["flipped"]),
            probabilities=tuple(float(row[name]) for name in PROBABILITY_COLUMNS),
            kl_grade=int(row["kl_grade"]),
            p_koa=float(row["p_koa"]),
            input_mean=float(row["mean"]),
            input_std=float(row["std"]),
            scored_at=at,
            grade_set=tuple(int(grade) for grade in row["grade_set"]),
            refer=bool(row["refer"]),
            refer_reason=row.get("refer_reason"),
            sr_sop_instance_uid=row.get("sr_sop_instance_uid"),
            heatmap=(
                (row["heatmap_path"], int(row["heatmap_index"]))
                if row.get("heatmap_path")
                else None
            ),
        )

    def to_row(self, run: RunContext, source_path: str) -> dict[str, Any]:
        """Its ``scores`` table row."""
        return {
            "batch_date": run.batch_date,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "patient_key": self.patient_key,
            "laterality": self.laterality,
            "knee_side": self.knee.side,
            "flipped": self.flipped,
            "source_path": source_path,
            "source_sha256": self.sha256,
            "file_format": self.file_format,
            **dict(zip(PROBABILITY_COLUMNS, self.probabilities, strict=True)),
            "kl_grade": self.kl_grade,
            "p_koa": self.p_koa,
            "model_version": run.model_version,
            "weights_sha256": run.weights_sha256,
            "preprocess_version": PREPROCESS_VERSION,
            "run_id": run.run_id,
            "scored_at": self.scored_at,
            "input_mean": self.input_mean,
            "input_std": self.input_std,
            "joint_x": self.knee.joint_x,
            "joint_y": self.knee.joint_y,
            "roi_mm": self.knee.roi_mm,
            "localizer_score": self.knee.localizer_score,
            "localizer_version": run.localizer_version,
            "knee_evidence": self.knee.evidence,
            "grade_set": list(self.grade_set),
            "refer": self.refer,
            "refer_reason": self.refer_reason,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "schema_version": SCORES_SCHEMA_VERSION,
        }


class NightLedger:
    """Collects the score and quarantine records of one night, from every stage.

    Files the listing rejected unread are quarantined (stage ``read``) as the ledger opens.
    Records are kept by origin; rows carry each input's ``source_path`` instead, named
    from the headers ``learn_headers`` was given.

    Args:
        run: What the night's rows share.
        listing: The night's files; their origins are what ``account`` expects.
        settings: Supplies the patient-key settings and ``path_identifier_pattern``.
        redactor: Redacts quarantine details on their way out; ``learn_headers`` teaches
            it the night's patient ids and names.
    """

    def __init__(
        self, run: RunContext, listing: BatchListing, settings: Settings, redactor: Redactor
    ) -> None:
        self.run = run
        self.redactor = redactor
        self._settings = settings
        self._listing = listing
        self._origins = [f.origin for f in listing.files] + [r.origin for r in listing.rejected]
        self._patients: dict[str, tuple[str | None, str | None]] = {}
        self._source_paths: dict[str, str] | None = None
        now = datetime.now(UTC)
        self._quarantined = [
            QuarantineRecord(r.origin, None, "read", r.reason, r.detail, now)
            for r in listing.rejected
        ]
        self._scored: list[ScoreRecord] = []

    @property
    def n_inputs(self) -> int:
        """Inputs the night holds: listed files and rejected ones."""
        return len(self._origins)

    @property
    def scores(self) -> tuple[ScoreRecord, ...]:
        """The scored images so far."""
        return tuple(self._scored)

    @property
    def quarantined(self) -> tuple[QuarantineRecord, ...]:
        """The quarantined inputs so far, in the order the stages reported them."""
        return tuple(self._quarantined)

    def learn_headers(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Learn each input's patient from its header, to name it and to redact text.

        Args:
            rows: Manifest rows: ``origin``, and ``patient_id`` and ``patient_name`` (None
                where the header could not be read).
        """
        rows = list(rows)
        self.redactor.learn_rows(rows)
        for row in rows:
            self._patients[row["origin"]] = (row.get("patient_id"), row.get("patient_name"))
        self._source_paths = None

    def source_paths(self) -> dict[str, str]:
        """Each input's ``source_path``, by origin: relative to the batch, identifiers replaced."""
        if self._source_paths is None:
            unknown: tuple[str | None, str | None] = (None, None)
            identities = [
                SourceIdentity(
                    self._listing.relative_name(origin), *self._patients.get(origin, unknown)
                )
                for origin in self._origins
            ]
            names = source_paths(
                identities, site_secret(self._settings), self._settings.path_identifier_pattern
            )
            self._source_paths = dict(zip(self._origins, names, strict=True))
        return self._source_paths

    def real_paths(self) -> dict[str, str]:
        """``source_path -> origin`` of every input: the operators' way back to the file."""
        return {name: origin for origin, name in self.source_paths().items()}

    def quarantine(self, rows: Iterable[Mapping[str, Any]], stage: str) -> None:
        """Quarantine the inputs of the rows that failed ``stage`` (``QuarantineRecord.of_row``).

        Rows are per knee after ``prepare``: a film whose knees fail is quarantined once,
        with the reasons of all of them, and its other knees' scores are dropped (the
        accounting rule: a file is quarantined, or has a score row for every knee on it).
        """
        now = datetime.now(UTC)
        done = {record.origin for record in self._quarantined}
        by_origin: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            if row["origin"] not in done:
                by_origin.setdefault(row["origin"], []).append(row)
        for failed in by_origin.values():
            reasons = ";".join(
                dict.fromkeys(r for row in failed for r in row["reasons"].split(";"))
            )
            record = QuarantineRecord.of_row({**failed[0], "reasons": reasons}, stage, now)
            self._quarantined.append(record)
        quarantined = set(by_origin)
        self._scored = [record for record in self._scored if record.origin not in quarantined]

    def score(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record scored knee rows that passed every check (``ScoreRecord.of_prediction``);
        rows of an input already quarantined are dropped with it."""
        now = datetime.now(UTC)
        quarantined = {record.origin for record in self._quarantined}
        self._scored += [
            ScoreRecord.of_prediction(self._with_report_uid(row), self._settings, now)
            for row in rows
            if row["origin"] not in quarantined
        ]

    def _with_report_uid(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """The row with the UID its film's structured report will have, when koa delivers
        reports (``KOA_DELIVER_TO``) and the film is a DICOM instance."""
        sop = row.get("sop_instance_uid")
        if self._settings.deliver_to is None or not sop:
            return row
        return {**row, "sr_sop_instance_uid": str(instance_uid(SR, sop, self.run.model_version))}

    def account(self) -> None:
        """Raise unless every input's ``source_path`` appears exactly once across the tables.

        Raises:
            AccountingError: Two inputs share a ``source_path``, or some are missing or
                duplicated (named by ``source_path``, the first few).
        """
        names = self.source_paths()
        expected = Counter(names.values())
        if len(expected) < len(names):
            shared = sorted(name for name, count in expected.items() if count > 1)
            raise AccountingError(f"inputs share a source_path (first: {shared[:3]})")
        knees = Counter((r.origin, r.knee.side) for r in self._scored)
        if any(count > 1 for count in knees.values()):
            twice = sorted(names.get(o, o) for (o, _), count in knees.items() if count > 1)
            raise AccountingError(f"a knee scored twice (first: {twice[:3]})")
        scored = {r.origin for r in self._scored}
        origins = [*scored, *(r.origin for r in self._quarantined)]
        seen = Counter(names.get(origin, origin) for origin in origins)
        missing = sorted(set(expected) - set(seen))
        extra = sorted(name for name, count in seen.items() if count > expected.get(name, 0))
        if missing or extra:
            raise AccountingError(
                f"{len(missing)} input(s) neither scored nor quarantined (first: {missing[:3]}); "
                f"{len(extra)} written more than once (first: {extra[:3]})"
            )

    def score_rows(self) -> list[dict[str, Any]]:
        """The ``scores`` table rows."""
        names = self.source_paths()
        return [record.to_row(self.run, names[record.origin]) for record in self._scored]

    def quarantine_rows(self) -> list[dict[str, Any]]:
        """The ``quarantine`` table rows, details redacted."""
        names = self.source_paths()
        return [
            record.to_row(self.run, names[record.origin], self.redactor)
            for record in self._quarantined
        ]

    @property
    def n_films_scored(self) -> int:
        """Inputs with at least one scored knee."""
        return len({record.origin for record in self._scored})

    def grade_distribution(self) -> dict[int, int]:
        """Count of scored knees per KL grade, every grade present."""
        counts = Counter(record.kl_grade for record in self._scored)
        return {grade: counts.get(grade, 0) for grade in GRADES}
