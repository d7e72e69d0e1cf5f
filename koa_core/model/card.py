"""The model card: what it takes to build a network, feed it and read its output."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from koa_core.imaging.transforms import PREPROCESS_VERSION
from koa_core.schema import CLASS_NAMES

DEFAULT_DEPTH = (1, 1, 1, 1)
DEFAULT_WIDTH = 32
# Nominal coverage of the KL prediction sets (``evaluation.conformal``): 90 %.
DEFAULT_CONFORMAL_LEVEL = 0.90


@dataclass(frozen=True)
class Architecture:
    """Which network to build: ``depth`` is BasicBlocks per stage, ``width`` the stem channels.

    ``reader_noise`` > 0 ends the network in a fixed reader-noise layer
    (``network.reader_noise_logits``): it outputs the probabilities of the grade a reader
    *records*, that share of each grade moved onto its neighbours. 0, as in cards written
    before the layer existed, outputs the head's logits as they are.
    """

    name: str = "resnet"
    depth: tuple[int, ...] = DEFAULT_DEPTH
    width: int = DEFAULT_WIDTH
    drop_rate: float = 0.2
    reader_noise: float = 0.0


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to feed a model and read its output, stored beside its weights.

    ``mean``/``std`` standardise preprocessed [0, 1] pixels; ``preprocess_version`` is
    the ``koa_core.imaging.transforms`` pipeline the model was trained on.

    The ``conformal_*`` fields are the prediction-set calibration fitted after training on
    the validation split (``evaluation.conformal``): the nominal level, the score threshold
    (``None``: not calibrated, as in cards written before sets existed), the temperature
    the scores were computed under and where it applied (``conformal_temperature_reader_share``:
    0 on the output, else on the head under the reader-noise layer) and the number of
    validation knees. ``input_*_range``
    bound the mean and std of the training inputs (a knee outside is referred to a reader).
    """

    input_size: int = 224
    mean: float = 0.5
    std: float = 0.25
    class_names: tuple[str, ...] = CLASS_NAMES
    preprocess_version: str = PREPROCESS_VERSION
    architecture: Architecture = field(default_factory=Architecture)
    conformal_level: float = DEFAULT_CONFORMAL_LEVEL
    conformal_threshold: float | None = None
    conformal_temperature: float | None = None
    conformal_calibration_size: int = 0
    conformal_temperature_reader_share: float = 0.0
    input_mean_range: tuple[float, float] | None = None
    input_std_range: tuple[float, float] | None = None

    def input_in_range(self, mean: float, std: float) -> bool:
        """Whether an input's statistics lie where the training inputs' did (always, for a
        card from before the ranges were recorded)."""
        for value, bounds in ((mean, self.input_mean_range), (std, self.input_std_range)):
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["architecture"]["depth"] = list(self.architecture.depth)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """The card ``to_dict`` wrote; unknown keys are rejected by the dataclass."""
        arch = dict(data.get("architecture", {}))
        if "depth" in arch:
            arch["depth"] = tuple(int(blocks) for blocks in arch["depth"])
        values = {key: value for key, value in data.items() if key != "architecture"}
        for key in ("class_names", "input_mean_range", "input_std_range"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values, architecture=Architecture(**arch))


def read_card(path: Path) -> ModelCard:
    """The ``ModelCard`` in a ``card.json`` written by training (its ``"card"`` entry)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return ModelCard.from_dict(data.get("card", data))
