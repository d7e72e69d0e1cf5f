"""The localizer card: what it takes to build the network, feed it a film and read its output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from koa_core.errors import CorruptCheckpointError

LOCALIZER_KIND = "localizer"


@dataclass(frozen=True)
class LocalizerArchitecture:
    """Which network to build: ``widths`` are the channels of the five stride-2 stages.

    The encoder halves the resolution once per stage (stride 32 with five: context to tell
    a knee from anything else); ``decoder_width`` channels merge the strides back down to
    ``output_stride``, where heat and offsets are predicted. Handedness comes from stage
    ``handed_stage`` alone (see ``network``). With ``view_head`` the network also says
    whether the film is a lateral view; cards written before it existed have none.
    """

    name: str = "heatmap-fpn"
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    decoder_width: int = 32
    output_stride: int = 4
    handed_stage: int = 2
    view_head: bool = False


@dataclass(frozen=True)
class InputNormalisation:
    """How a film becomes network input: resample, window to percentiles, standardise.

    The film is downsampled (antialiased) to ``mm_per_px``, clipped to its
    ``low_percentile``-``high_percentile`` window scaled to [0, 1], then standardised
    with ``mean`` and ``std``. The border added to reach a multiple of the network's
    stride holds ``pad_value`` (before standardisation).
    """

    low_percentile: float = 0.5
    high_percentile: float = 99.5
    mean: float = 0.5
    std: float = 0.25
    pad_value: float = 0.0


@dataclass(frozen=True)
class LocalizerCard:
    """Everything about one localizer, stored as ``card.json`` beside its weights.

    Attributes:
        architecture: the network.
        mm_per_px: the pixel spacing every film is resampled to before the network.
        normalisation: the input window and standardisation.
        candidate_threshold: least peak score ``find_knees`` returns.
        min_separation_mm: peaks closer than this to a better one are the same knee.
        version: the registry version id ("" before registration).
        weights_sha256: of ``weights.pt`` ("" before registration).
        data_fingerprint: sha256 over the training films and their labels.
        metrics: per split, e.g. ``{"validation": {"median_error_mm": ..., ...}}``.
        created_at: registration time, ISO 8601 UTC ("" before registration).
        hyperparameters: the training configuration.
    """

    architecture: LocalizerArchitecture = field(default_factory=LocalizerArchitecture)
    mm_per_px: float = 3.0
    normalisation: InputNormalisation = field(default_factory=InputNormalisation)
    candidate_threshold: float = 0.1
    min_separation_mm: float = 60.0
    version: str = ""
    weights_sha256: str = ""
    data_fingerprint: str = ""
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    created_at: str = ""
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    kind: str = LOCALIZER_KIND

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data["architecture"]["widths"] = list(self.architecture.widths)
        data["metrics"] = {split: dict(values) for split, values in self.metrics.items()}
        data["hyperparameters"] = dict(self.hyperparameters)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalizerCard:
        """The card ``to_dict`` wrote; unknown keys are rejected by the dataclasses."""
        values = dict(data)
        arch = dict(values.pop("architecture", {}))
        if "widths" in arch:
            arch["widths"] = tuple(int(width) for width in arch["widths"])
        norm = dict(values.pop("normalisation", {}))
        return cls(
            architecture=LocalizerArchitecture(**arch),
            normalisation=InputNormalisation(**norm),
            **values,
        )

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> LocalizerCard:
        """The card of a registered version's ``card.json``: its ``card`` entry, completed
        with what registration added (version, weights sha256, created_at, metrics, data)."""
        card = cls.from_dict(document.get("card", document))
        data = document.get("data", {})
        return replace(
            card,
            version=str(document.get("version", card.version)),
            weights_sha256=str(document.get("weights_sha256", card.weights_sha256)),
            created_at=str(document.get("created_at", card.created_at)),
            metrics={**card.metrics, **document.get("metrics", {})},
            data_fingerprint=str(data.get("fingerprint", card.data_fingerprint)),
        )


def read_localizer_card(path: Path) -> LocalizerCard:
    """The card in a ``card.json`` (a training output's or a registered version's).

    Raises:
        CorruptCheckpointError: the file is missing, not JSON, or not a localizer card.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        card = LocalizerCard.from_document(document)
    except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as error:
        raise CorruptCheckpointError(f"{path}: not a readable localizer card: {error}") from error
    if card.kind != LOCALIZER_KIND:
        raise CorruptCheckpointError(f"{path}: a {card.kind!r} card, not a localizer's")
    return card
