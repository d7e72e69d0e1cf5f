"""A model's prediction-set calibration: fitted on validation after training, kept in its card."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from koa_core.data.datasets import KLDataset
from koa_core.evaluation.calibration import fit_probability_temperature
from koa_core.evaluation.conformal import ConformalCalibration, fit_conformal
from koa_core.model.card import ModelCard
from koa_core.model.checkpoint import load_model
from koa_core.model.inference import predict_dataset
from koa_core.schema import CARD_NAME, WEIGHTS_NAME
from koa_core.storage.files import atomic_write_bytes

CALIBRATION_SPLIT = "val"
INFERENCE_BATCH = 64
RANGE_LOW, RANGE_HIGH, RANGE_MARGIN = 0.5, 99.5, 0.1


def card_calibration(card: ModelCard) -> ConformalCalibration | None:
    """The calibration recorded in ``card``; ``None`` for a card never calibrated."""
    if card.conformal_threshold is None:
        return None
    return ConformalCalibration(
        level=card.conformal_level,
        threshold=card.conformal_threshold,
        temperature=card.conformal_temperature,
        n_calibration=card.conformal_calibration_size,
        temperature_reader_share=card.conformal_temperature_reader_share,
    )


def with_calibration(card: ModelCard, calibration: ConformalCalibration) -> ModelCard:
    """``card`` recording ``calibration``."""
    return replace(
        card,
        conformal_level=calibration.level,
        conformal_threshold=calibration.threshold,
        conformal_temperature=calibration.temperature,
        conformal_calibration_size=calibration.n_calibration,
        conformal_temperature_reader_share=calibration.temperature_reader_share,
    )


def fit_sets(
    val_probs: npt.ArrayLike, val_labels: npt.ArrayLike, level: float, reader_share: float = 0.0
) -> ConformalCalibration:
    """Temperature-scale on validation, then calibrate LAC sets on the same knees.

    The temperature is the one ``evaluate`` fits (``fit_probability_temperature`` for a
    grader whose reader-noise layer has ``reader_share``), so the sets are scored on the
    probabilities the evaluation reports as calibrated.
    """
    probs = np.asarray(val_probs, dtype=np.float64)
    labels = np.asarray(val_labels).astype(np.int64)
    temperature = fit_probability_temperature(probs, labels, reader_share)
    return fit_conformal(
        probs,
        labels,
        level,
        temperature=temperature.value,
        temperature_reader_share=temperature.reader_share,
    )


def evaluation_calibration(
    card: ModelCard, val_probs: npt.ArrayLike | None, val_labels: npt.ArrayLike | None
) -> ConformalCalibration | None:
    """The sets an evaluation measures: the card's, else fitted now on validation.

    A card from before prediction sets existed has no threshold; its sets are then
    calibrated on the evaluated dataset's validation split at the card's level, as
    training would have done. ``None`` when neither is available.
    """
    recorded = card_calibration(card)
    if recorded is not None:
        return recorded
    if val_probs is None or val_labels is None or len(np.asarray(val_labels)) == 0:
        return None
    return fit_sets(val_probs, val_labels, card.conformal_level, card.architecture.reader_noise)


def with_input_ranges(card: ModelCard, dataset: KLDataset) -> ModelCard:
    """``card`` with the range of its training inputs' mean and std: the central 99 % of
    the training images, widened by a tenth of its span either way."""
    train = dataset.splits.get("train")
    if train is None or len(train.labels) == 0:
        return card
    pixels = train.images.reshape(len(train.labels), -1).float() / 255.0
    ranges = []
    for values in (pixels.mean(dim=1).numpy(), pixels.std(dim=1, correction=0).numpy()):
        low, high = (float(v) for v in np.percentile(values, [RANGE_LOW, RANGE_HIGH]))
        margin = RANGE_MARGIN * (high - low)
        ranges.append((low - margin, high + margin))
    return replace(card, input_mean_range=ranges[0], input_std_range=ranges[1])


def calibrate_run(
    run_dir: Path, dataset: KLDataset, *, device: str = "auto"
) -> ConformalCalibration | None:
    """Calibrate a training run's prediction sets on ``dataset``'s validation split.

    Reads ``run_dir``'s ``card.json`` and best weights, scores the validation split, fits
    the temperature and the sets at the card's ``conformal_level``, and rewrites the card
    (atomically) with the ``conformal_*`` fields; the rest of ``card.json`` is kept.

    Returns:
        The calibration, or ``None`` when the dataset has no validation knees (the card
        then stays uncalibrated and the model's results carry no sets).
    """
    val = dataset.splits.get(CALIBRATION_SPLIT)
    if val is None or len(val.labels) == 0:
        return None
    card_path = run_dir / CARD_NAME
    document = json.loads(card_path.read_text(encoding="utf-8"))
    card = ModelCard.from_dict(document["card"])
    model = load_model(run_dir / WEIGHTS_NAME, card, "cpu")
    probs = predict_dataset(model, card, val.images, INFERENCE_BATCH, device)
    calibration = fit_sets(
        probs, val.labels.numpy(), card.conformal_level, card.architecture.reader_noise
    )
    ranged = with_input_ranges(with_calibration(card, calibration), dataset)
    document["card"] = ranged.to_dict()
    atomic_write_bytes(card_path, json.dumps(document, indent=2).encode())
    return calibration
