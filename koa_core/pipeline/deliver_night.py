"""Send a committed night's results back to the PACS: one SR and one SC per scored film.

Runs after the Parquet commit, so whatever happens here never changes a score: a film whose
results cannot be built or sent is recorded in ``deliveries`` (status, attempts, error) and
``koa deliver --batch-date D`` sends it again. Only DICOM films get results (a PNG has no
study to put them in).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from importlib.metadata import version as package_version
from pathlib import Path

from koa_core.config import Settings
from koa_core.delivery.deliver import deliver_findings
from koa_core.delivery.findings import Algorithm, FilmFindings
from koa_core.delivery.ledger import DeliveryRecord
from koa_core.errors import KoaError
from koa_core.pipeline.film_results import ScoredKnee, film_findings
from koa_core.pipeline.ledger import NightLedger, ScoreRecord
from koa_core.registry.store import ModelVersion

log = logging.getLogger(__name__)
ALGORITHM_NAME = "koa knee KL grader"


def algorithm_of(grader: ModelVersion, localizer: ModelVersion) -> Algorithm:
    """The identity written into every SR: koa's version, both models and their weights."""
    return Algorithm(
        name=ALGORITHM_NAME,
        version=package_version("koa"),
        model_version=grader.version,
        weights_sha256=grader.weights_sha256,
        localizer_version=localizer.version,
        localizer_sha256=localizer.weights_sha256,
    )


def _scored_knee(record: ScoreRecord, row: dict[str, object]) -> ScoredKnee:
    heatmap = record.heatmap
    return ScoredKnee.of_row(
        {
            **row,
            "roi_box": record.knee.box,
            "heatmap_path": heatmap[0] if heatmap else None,
            "heatmap_index": heatmap[1] if heatmap else None,
        }
    )


def night_findings(ledger: NightLedger, algorithm: Algorithm) -> list[FilmFindings]:
    """The findings of every scored DICOM film of the night, read from its file."""
    names = ledger.source_paths()
    films: dict[str, list[ScoredKnee]] = defaultdict(list)
    for record in ledger.scores:
        if record.file_format == "dicom" and record.sop_instance_uid:
            row = record.to_row(ledger.run, names[record.origin])
            films[record.origin].append(_scored_knee(record, row))
    return [film_findings(Path(origin), knees, algorithm) for origin, knees in films.items()]


def deliver_night(
    ledger: NightLedger, algorithm: Algorithm, settings: Settings, destination: str
) -> list[DeliveryRecord]:
    """Build, keep and send the night's results; every outcome goes to ``deliveries``.

    A koa error (a result that cannot be built, the table that cannot be written) is
    logged, not raised: the night's scores are committed already and stay as they are.
    """
    try:
        findings = night_findings(ledger, algorithm)
        return deliver_findings(
            findings,
            destination,
            batch_date=ledger.run.batch_date,
            run_id=ledger.run.run_id,
            settings=settings,
        )
    except KoaError as error:
        log.error("delivery of %s failed: %s", ledger.run.batch_date, error)
        return []
