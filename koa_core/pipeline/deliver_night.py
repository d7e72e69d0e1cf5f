"""Send a committed night's results back to the PACS: one SR and one SC per scored film.

The scoring workers built and kept every film's SR and SC beside its scores
(``film_results.keep_film_results``); this runs after the Parquet commit, so whatever
happens here never changes a score. The results of films the night scored are sent; those
of films its checks quarantined after scoring are deleted unsent. A film whose results
could not be built or sent is recorded in ``deliveries`` (status, attempts, error) and
``koa deliver --batch-date D`` sends it again. Only DICOM films get results (a PNG has no
study to put them in).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import version as package_version

from koa_core.config import Settings
from koa_core.delivery.deliver import Instance, Unbuilt, record_unbuilt, send_instances
from koa_core.delivery.findings import Algorithm
from koa_core.delivery.ledger import DeliveryRecord
from koa_core.errors import KoaError
from koa_core.pipeline.ledger import NightLedger
from koa_core.registry.store import ModelVersion

log = logging.getLogger(__name__)
ALGORITHM_NAME = "koa knee KL grader"
Built = Mapping[str, list[Instance] | str]
"""Per film (origin): its kept SR and SC, or why they could not be built."""


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


def deliver_night(
    ledger: NightLedger, built: Built, settings: Settings, destination: str
) -> list[DeliveryRecord]:
    """Send the kept results of the night's scored films; every outcome goes to ``deliveries``.

    A koa error (the table that cannot be written) is logged, not raised: the night's
    scores are committed already and stay as they are.
    """
    scored = {record.origin: record for record in ledger.scores}
    instances: list[Instance] = []
    unbuilt: list[Unbuilt] = []
    for origin, results in built.items():
        if origin not in scored:
            _drop(results)
        elif isinstance(results, str):
            log.error("the results of a film could not be built: %s", results)
            record = scored[origin]
            unbuilt.append(
                Unbuilt(
                    ledger.run.run_id,
                    str(record.sop_instance_uid),
                    str(record.study_instance_uid),
                    ledger.run.model_version,
                    results,
                )
            )
        else:
            instances += results
    day = ledger.run.batch_date
    try:
        sent = send_instances(instances, destination, day, settings)
        return sent + record_unbuilt(unbuilt, destination, day, settings)
    except KoaError as error:
        log.error("delivery of %s failed: %s", day, error)
        return []


def _drop(results: list[Instance] | str) -> None:
    """Delete the kept results of a film the night did not score: they must never be sent."""
    for instance in results if not isinstance(results, str) else []:
        instance.path.unlink(missing_ok=True)
