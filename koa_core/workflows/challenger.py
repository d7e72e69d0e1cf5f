"""The one promotion workflow: train a challenger, test it once, compare, apply the rule, audit.

1. ``train_challenger``: train, calibrate the prediction sets on val (into the card),
   register, evaluate on val and test once (reports written, metrics recorded beside the
   version); never promotes.
2. ``promote_challenger``: compare its test evaluation with the champion's on the same
   dataset (the champion is re-evaluated only when its recorded test metrics come from
   another dataset), apply the promotion rule and log the decision in the registry.

``koa train --promote``, the ``retrain`` flow and ``koa demo`` run 1 then 2;
``koa models promote`` runs 2 for an already registered version (``promote_if_better``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from koa_core.config import get_settings
from koa_core.data.datasets import KLDataset, LoadProgress
from koa_core.data.labels import dataset_fingerprint, discover
from koa_core.errors import DatasetError
from koa_core.evaluation.evaluate import (
    TEST_SPLIT,
    VALIDATION_SPLIT,
    EvaluationOutcome,
    evaluate_version,
    load_for_card,
)
from koa_core.evaluation.set_calibration import calibrate_run
from koa_core.registry import ModelRegistry, ModelVersion, PromotionPolicy, should_promote
from koa_core.registry.champion import PromotionRecord
from koa_core.training.config import TrainConfig
from koa_core.training.loop import Progress, train

log = logging.getLogger(__name__)

DRY_RUN_PREFIX = "promotion disabled (promote=False); the rule: "


@dataclass(frozen=True)
class Challenger:
    """A trained, registered challenger and its two evaluations (``test`` None without one)."""

    version: ModelVersion
    validation: EvaluationOutcome
    test: EvaluationOutcome | None
    best_val_qwk: float

    def tested(self) -> EvaluationOutcome:
        """The test evaluation the rule compares on.

        Raises:
            DatasetError: the dataset had no test split.
        """
        if self.test is None:
            raise DatasetError(
                f"{self.validation.out_dir}: the dataset has no {TEST_SPLIT!r} split,"
                f" so {self.version.version} cannot be compared with the champion"
            )
        return self.test


@dataclass(frozen=True)
class PromotionOutcome:
    """A promotion decision, the test evaluations it compared and its audit record.

    ``record`` is the line logged in ``promotions.jsonl``; when ``applied`` is False (a dry
    run) nothing was logged and ``record`` says what the rule would have done.
    """

    record: PromotionRecord
    challenger: EvaluationOutcome
    champion: EvaluationOutcome | None
    applied: bool

    @property
    def promoted(self) -> bool:
        return self.record.promoted


def training_dir(config: TrainConfig, dataset: KLDataset) -> Path:
    """A run directory fixed by the data and hyper-parameters, so ``resume`` finds it again."""
    key = json.dumps(config.resume_key(), sort_keys=True).encode()
    name = f"{dataset.fingerprint[:12]}-{hashlib.sha256(key).hexdigest()[:8]}"
    return get_settings().runs_dir / "training" / name


def train_challenger(
    config: TrainConfig,
    data: Path | KLDataset,
    *,
    labels: Path | None = None,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    registry: ModelRegistry | None = None,
    load_progress: LoadProgress | None = None,
) -> Challenger:
    """Train on ``data``, register the result, evaluate it on val and test once; never promote.

    The version's card holds the hyper-parameters, the data fingerprint and the
    prediction-set calibration fitted on the validation split; the two
    evaluations' metrics (with the paths of their reports) are recorded beside it.

    Args:
        config: hyper-parameters (stored with the version).
        data: a dataset folder or an already loaded dataset at ``config.input_size``.
        labels: an explicit labels table for ``data``.
        out_dir: the training directory (default under ``$KOA_HOME/runs/training``).
        progress: called after every epoch.
        resume: continue from ``out_dir``'s checkpoint when there is one.
        registry: default ``ModelRegistry()``.
        load_progress: called while images are preprocessed.

    Raises:
        DatasetError: the dataset cannot be used.
        CorruptCheckpointError: ``resume`` found a damaged or mismatched checkpoint.
    """
    registry = registry or ModelRegistry()
    dataset = load_for_card(data, config.card(), labels, load_progress)
    run_dir = out_dir or training_dir(config, dataset)
    result = train(config, dataset, run_dir, resume=resume, progress=progress)
    # Calibrated before registering, so the registered card carries the sets' threshold.
    calibrate_run(run_dir, dataset, device=config.device)
    version = registry.register(run_dir, hyperparameters=config.to_dict())
    validation = evaluate_version(
        version, dataset, VALIDATION_SPLIT, device=config.device, registry=registry
    )
    test = None
    if TEST_SPLIT in dataset.splits:
        test = evaluate_version(
            version, dataset, TEST_SPLIT, device=config.device, registry=registry
        )
    log.info("registered %s (best val QWK %.4f)", version.version, result.best_val_qwk)
    return Challenger(registry.get(version), validation, test, result.best_val_qwk)


def evaluation_on_test(
    version: ModelVersion,
    data: Path | KLDataset | None,
    fingerprint: str | None,
    *,
    labels: Path | None = None,
    device: str = "auto",
    registry: ModelRegistry | None = None,
) -> EvaluationOutcome:
    """``version`` on the test split of the dataset ``fingerprint`` names: recorded, else now.

    Raises:
        DatasetError: no recorded test metrics on that dataset, and no ``data`` to measure on.
    """
    recorded = version.metrics.get(TEST_SPLIT, {})
    if fingerprint is not None and recorded.get("dataset_fingerprint") == fingerprint:
        try:
            return EvaluationOutcome.from_recorded(version.version, TEST_SPLIT, recorded)
        except (KeyError, TypeError) as error:
            log.warning("%s: recorded test metrics incomplete (%s)", version.version, error)
    if data is None:
        raise DatasetError(
            f"model {version.version} has no test metrics on the same test set as the"
            " other model; give the dataset to evaluate both on (--data)"
        )
    return evaluate_version(
        version, data, TEST_SPLIT, labels=labels, device=device, registry=registry
    )


def promote_challenger(
    challenger: EvaluationOutcome,
    data: Path | KLDataset | None = None,
    *,
    apply: bool = True,
    labels: Path | None = None,
    device: str = "auto",
    registry: ModelRegistry | None = None,
    policy: PromotionPolicy | None = None,
) -> PromotionOutcome:
    """Compare ``challenger`` with the champion on one test set, apply the rule, audit it.

    Args:
        challenger: the challenger's test evaluation.
        data: the dataset to re-evaluate the champion on when its recorded test metrics
            come from another dataset than ``challenger``'s.
        apply: False only reports what the rule would do: the pointer stays, nothing is
            logged.
        labels: an explicit labels table for ``data``.
        device: where a re-evaluation runs.
        registry: default ``ModelRegistry()``.
        policy: default ``PromotionPolicy.from_settings()``.

    Raises:
        DatasetError: the champion has no test metrics on that dataset and ``data`` is None.
        CorruptCheckpointError: a model's weights fail their checksum.
    """
    registry = registry or ModelRegistry()
    policy = policy or PromotionPolicy.from_settings()
    current = registry.champion()
    champion = None
    if current is not None and current.version != challenger.version:
        champion = evaluation_on_test(
            current,
            data,
            challenger.dataset_fingerprint,
            labels=labels,
            device=device,
            registry=registry,
        )
    new = challenger.recorded_metrics()
    # The registry answers "already the champion" itself; it still wants metrics.
    old = None if current is None else (champion or challenger).recorded_metrics()
    if apply:
        name = None if current is None else current.version
        record = registry.promote(challenger.version, old, new, compared_with=name, policy=policy)
    else:
        rule = should_promote(old, new, policy)
        record = PromotionRecord(
            challenger.version,
            None if current is None else current.version,
            promoted=False,
            forced=False,
            reason=DRY_RUN_PREFIX + rule.reason,
            policy=policy.to_dict(),
            below_floor=rule.below_floor,
        )
    return PromotionOutcome(record, challenger, champion, apply)


def promote_if_better(
    ref: str | Path | ModelVersion,
    data: Path | KLDataset | None = None,
    *,
    labels: Path | None = None,
    device: str = "auto",
    registry: ModelRegistry | None = None,
) -> PromotionOutcome:
    """Apply the promotion rule to a registered version against the current champion.

    Both models are compared on the test split of ``data`` (metrics already recorded on
    that same dataset are reused, others are measured now). Without ``data`` the recorded
    test metrics are used, and must come from the same dataset.

    Raises:
        DatasetError: no common test set to compare on, or ``data`` has no test split.
        ModelNotFoundError: ``ref`` names no registered model.
        CorruptCheckpointError: a model's weights fail their checksum.
    """
    registry = registry or ModelRegistry()
    found = registry.get(ref)
    fingerprint = _fingerprint_of(data, labels)
    if fingerprint is None:
        fingerprint = found.metrics.get(TEST_SPLIT, {}).get("dataset_fingerprint")
    tested = evaluation_on_test(
        found, data, fingerprint, labels=labels, device=device, registry=registry
    )
    return promote_challenger(tested, data, labels=labels, device=device, registry=registry)


def _fingerprint_of(data: Path | KLDataset | None, labels: Path | None) -> str | None:
    if isinstance(data, KLDataset):
        return data.fingerprint
    if data is None:
        return None
    return dataset_fingerprint(discover(data, labels))
