"""Evaluate registered models on a labelled dataset: metrics, calibration, report."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from koa_core.config import get_settings
from koa_core.data.datasets import KLDataset, LoadProgress, Split, load_dataset
from koa_core.errors import DatasetError
from koa_core.evaluation.calibration import (
    GradeNoiseCalibration,
    Temperature,
    fit_grade_noise,
    fit_probability_temperature,
    head_logits,
)
from koa_core.evaluation.conformal import set_quality
from koa_core.evaluation.metrics import (
    BOOTSTRAP_SAMPLES,
    EvaluationMetrics,
    evaluate_predictions,
    with_grade_noise,
)
from koa_core.evaluation.report import ReportPaths, write_evaluation_report
from koa_core.evaluation.set_calibration import evaluation_calibration
from koa_core.model.card import ModelCard
from koa_core.model.checkpoint import load_model
from koa_core.model.inference import predict_dataset
from koa_core.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)

VALIDATION_SPLIT = "val"
TEST_SPLIT = "test"
# The registry keeps metrics under these names (``ModelVersion.metrics``).
REGISTRY_SPLIT_NAMES = {"val": "validation"}
# What ``recorded_metrics`` adds to ``EvaluationMetrics.to_dict()``.
PROVENANCE_KEYS = ("temperature", "dataset_fingerprint", "report")
INFERENCE_BATCH = 64


@dataclass(frozen=True)
class ProbabilityEvaluation:
    """Metrics of one split's probabilities, with the temperature fitted on validation."""

    metrics: EvaluationMetrics
    temperature: Temperature | None
    calibrated_probs: NDArray[np.float64] | None


@dataclass(frozen=True)
class EvaluationOutcome:
    """What ``evaluate_version`` measured and where it wrote the report."""

    version: str
    split: str
    metrics: EvaluationMetrics
    temperature: float | None
    out_dir: Path
    report: ReportPaths
    dataset_fingerprint: str

    def recorded_metrics(self) -> dict[str, Any]:
        """The metrics as the registry stores them: ``to_dict()`` plus provenance."""
        return {
            **self.metrics.to_dict(),
            "temperature": self.temperature,
            "dataset_fingerprint": self.dataset_fingerprint,
            "report": str(self.report.report_md),
        }

    @classmethod
    def from_recorded(
        cls, version: str, split: str, recorded: Mapping[str, Any]
    ) -> EvaluationOutcome:
        """The outcome whose ``recorded_metrics()`` the registry holds (no re-evaluation).

        Raises:
            KeyError: ``recorded`` lacks a field of a ``recorded_metrics()`` record.
            TypeError: ``recorded`` holds fields no such record has.
        """
        metrics = {key: value for key, value in recorded.items() if key not in PROVENANCE_KEYS}
        out_dir = Path(recorded["report"]).parent
        return cls(
            version,
            split,
            EvaluationMetrics.from_dict(metrics),
            recorded["temperature"],
            out_dir,
            ReportPaths.in_dir(out_dir),
            str(recorded["dataset_fingerprint"]),
        )


def evaluate_probabilities(
    y_true: ArrayLike,
    probs: ArrayLike,
    *,
    val_labels: ArrayLike | None = None,
    val_probs: ArrayLike | None = None,
    threshold: float = 0.5,
    n_bootstrap: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    reader_share: float = 0.0,
) -> ProbabilityEvaluation:
    """Score ``probs`` against ``y_true``, calibrating with a temperature fitted on validation.

    Args:
        y_true: true KL grades of the evaluated split, shape (N,).
        probs: the model's probabilities on it, shape (N, 5).
        val_labels: validation grades; with ``val_probs``, enables temperature scaling.
        val_probs: the model's probabilities on the validation split.
        threshold: KOA operating point on p(KL>=2).
        n_bootstrap: bootstrap resamples for the confidence intervals.
        seed: bootstrap seed.
        reader_share: the grader's reader-noise layer (``fit_probability_temperature``).
    """
    temperature: Temperature | None = None
    calibrated: NDArray[np.float64] | None = None
    noise: GradeNoiseCalibration | None = None
    if val_labels is not None and val_probs is not None and len(np.asarray(val_labels)) > 0:
        temperature = fit_probability_temperature(val_probs, val_labels, reader_share)
        calibrated = temperature.apply(probs)
        noise = fit_grade_noise(head_logits(val_probs), np.asarray(val_labels))
    metrics = evaluate_predictions(
        y_true,
        probs,
        threshold,
        n_bootstrap=n_bootstrap,
        seed=seed,
        calibrated_probs=calibrated,
    )
    if noise is not None:
        metrics = with_grade_noise(
            metrics,
            y_true,
            noise.apply(head_logits(probs)),
            noise.adjacent_share,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
    return ProbabilityEvaluation(metrics, temperature, calibrated)


def with_set_quality(
    metrics: EvaluationMetrics,
    card: ModelCard,
    y_true: ArrayLike,
    probs: ArrayLike,
    *,
    val_labels: ArrayLike | None = None,
    val_probs: ArrayLike | None = None,
) -> EvaluationMetrics:
    """``metrics`` with the coverage and mean size of the model's prediction sets on the split.

    The sets are the card's (calibrated on validation at training time), else fitted now on
    ``val_probs``; without either (or when the split evaluated is the calibration split,
    where coverage would be measured on the knees that set the threshold) nothing changes.
    """
    calibration = evaluation_calibration(card, val_probs, val_labels)
    if calibration is None:
        return metrics
    quality = set_quality(probs, y_true, calibration)
    return replace(
        metrics,
        conformal_level=calibration.level,
        conformal_coverage=quality.coverage,
        conformal_mean_set_size=quality.mean_set_size,
    )


def dataset_cache_dir() -> Path:
    """Where preprocessed datasets are cached (``$KOA_HOME/cache/datasets``)."""
    return get_settings().home / "cache" / "datasets"


def load_for_card(
    data: Path | KLDataset,
    card: ModelCard,
    labels: Path | None = None,
    progress: LoadProgress | None = None,
) -> KLDataset:
    """``data`` preprocessed at the card's input size (from the cache when possible).

    Raises:
        DatasetError: the dataset cannot be used, or a loaded one has another input size.
    """
    if isinstance(data, KLDataset):
        if data.input_size != card.input_size:
            raise DatasetError(
                f"{data.root}: loaded at {data.input_size} px, the model needs {card.input_size}"
            )
        return data
    return load_dataset(
        data, card.input_size, labels=labels, cache_dir=dataset_cache_dir(), progress=progress
    )


def _split(dataset: KLDataset, name: str) -> Split:
    if name not in dataset.splits:
        raise DatasetError(
            f"{dataset.root}: no {name!r} split (has {', '.join(sorted(dataset.splits))})"
        )
    return dataset.splits[name]


def _default_out_dir(version: str, split: str) -> Path:
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    return get_settings().home / "evaluations" / version / f"{split}-{stamp}"


def evaluate_version(
    version: ModelVersion | str | Path,
    data: Path | KLDataset,
    split: str = TEST_SPLIT,
    *,
    labels: Path | None = None,
    out_dir: Path | None = None,
    device: str = "auto",
    registry: ModelRegistry | None = None,
    record: bool = True,
) -> EvaluationOutcome:
    """Evaluate a registered model on one split of a labelled dataset and write its report.

    The temperature is fitted on the validation split (when the dataset has one and it is
    not the split evaluated), as are the prediction sets of a card that has none; their
    coverage and mean size are measured on every split but validation. ``metrics.json``,
    the plots and ``report.md`` go to ``out_dir`` (default
    ``$KOA_HOME/evaluations/<version>/<split>-<timestamp>/``) and the metrics are recorded
    on the version in the registry (``"val"`` as ``"validation"``).

    Args:
        version: a ``ModelVersion`` or a registry ref (id, ``champion``, ``latest``, path).
        data: a dataset folder or an already loaded dataset.
        split: ``test``, ``val`` or ``train``.
        labels: an explicit labels table for ``data``.
        out_dir: where the report goes.
        device: ``auto``, ``cpu``, ``cuda``, ...
        registry: default ``ModelRegistry()``.
        record: attach the metrics to the version in the registry.

    Raises:
        ModelNotFoundError: ``version`` names no registered model.
        CorruptCheckpointError: the weights fail their checksum or do not fit the card.
        DatasetError: the dataset cannot be used or lacks ``split``.
    """
    registry = registry or ModelRegistry()
    found = registry.verify(version if isinstance(version, ModelVersion) else registry.get(version))
    card = found.model_card()
    dataset = load_for_card(data, card, labels)
    evaluated = _split(dataset, split)
    model = load_model(found.weights_path, card, "cpu")
    probs = predict_dataset(model, card, evaluated.images, INFERENCE_BATCH, device)
    val = dataset.splits.get(VALIDATION_SPLIT) if split != VALIDATION_SPLIT else None
    val_probs = (
        None if val is None else predict_dataset(model, card, val.images, INFERENCE_BATCH, device)
    )
    result = evaluate_probabilities(
        evaluated.labels.numpy(),
        probs,
        val_labels=None if val is None else val.labels.numpy(),
        val_probs=val_probs,
        reader_share=card.architecture.reader_noise,
    )
    metrics = result.metrics
    if split != VALIDATION_SPLIT:
        metrics = with_set_quality(
            metrics,
            card,
            evaluated.labels.numpy(),
            probs,
            val_labels=None if val is None else val.labels.numpy(),
            val_probs=val_probs,
        )
    target = out_dir or _default_out_dir(found.version, split)
    report = write_evaluation_report(
        metrics,
        target,
        title=f"Model {found.version} on {dataset.root.name}/{split}",
        y_true=evaluated.labels.numpy(),
        probs=probs,
        calibrated_probs=result.calibrated_probs,
    )
    outcome = EvaluationOutcome(
        found.version,
        split,
        metrics,
        None if result.temperature is None else result.temperature.value,
        target,
        report,
        dataset.fingerprint,
    )
    if record:
        registry.record_metrics(
            found, REGISTRY_SPLIT_NAMES.get(split, split), outcome.recorded_metrics()
        )
    return outcome
