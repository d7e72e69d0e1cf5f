"""The hyper-parameters of one training run, stored in the model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from koa_core.model.card import (
    DEFAULT_CONFORMAL_LEVEL,
    DEFAULT_DEPTH,
    Architecture,
    ModelCard,
)

# Where and how fast a run executes, not what it learns: free to change on resume. The
# prediction sets' level is fitted after training, so it cannot change the weights either.
RUNTIME_FIELDS = frozenset(
    {"device", "threads", "cache_dir", "max_skipped_share", "conformal_level"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all JSON-serialisable, stored in the card).

    The defaults are the recipe chosen by the ablations in ``benchmarks/RESULTS.md``: a
    plain VGG-style network (four stages of two 3x3 convolutions, 16-128 channels, no
    dropout) at 128 px, a fixed 16-epoch OneCycle schedule to 3e-3 with no early stopping
    (``patience=None``), plain (unweighted) cross-entropy, no augmentation, fp32, and the
    last weights.
    ``class_weighted`` weights the cross-entropy by inverse class frequency instead; it
    shifts the predicted grade shares towards rare grades, which one temperature cannot
    undo, so calibration suffers.

    ``loss="ordinal"`` adds ``ordinal_weight`` x |expected grade - true grade| to the
    cross-entropy, so confusing KL1 with KL4 costs more than with KL2, while the five
    softmax outputs (and P(KL >= 2) from them) stay as they are. ``patience`` epochs
    without a better validation QWK stop a run early. ``keep`` chooses the weights
    written: the ``"last"`` epoch's, the ``"best"`` by validation QWK, or an ``"ema"``
    (exponential moving average, ``ema_decay`` per step) of them, which is also what is
    validated. Validation runs every ``validate_every`` epochs and after the last, or after
    every epoch when ``patience`` or ``keep="best"`` chooses by it
    (``loop.validates``). ``augment_strength`` scales every augmentation range.

    ``adjacent_smoothing`` moves that share of each target onto the neighbouring grades
    (split between the two; all on the one for KL0 and KL4), where readers disagree and
    noisy labels fall. ``label_smoothing`` (torch's) spreads it over all five instead.
    ``reader_noise`` ends the network in a fixed layer that moves that share of each
    predicted grade onto its neighbours (``network.reader_noise_logits``): the targets stay
    as recorded, and the network's output is what a reader would record.
    """

    # 16 epochs without dropout matched the reference CNN's QWK on four phantom sets where
    # 12 epochs with dropout 0.2 trailed it by up to 0.024 (benchmarks/RESULTS.md).
    epochs: int = 16
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    loss: Literal["ce", "ordinal"] = "ce"
    ordinal_weight: float = 0.5
    patience: int | None = None
    seed: int = 0
    input_size: int = 128
    architecture: str = "plain"
    depth: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 16
    drop_rate: float = 0.0
    # Off by default: on the demo phantoms (whose acquisition variety is rendered already)
    # augmentation underfits a 12-epoch schedule, test QWK 0.950 with it, 0.959 at
    # half strength, 0.964 without (benchmarks/RESULTS.md). Measure it on real data.
    augment: bool = False
    device: str = "auto"
    # bf16 autocast measured 3x *slower* than fp32 for this narrow net on an AMX Xeon
    # (16 vs 47 img/s, 128 px, batch 32, 2 threads): casts cost more than they save.
    amp: bool = False
    threads: int | None = None
    cache_dir: str | None = None
    max_skipped_share: float = 0.1
    conformal_level: float = DEFAULT_CONFORMAL_LEVEL
    keep: Literal["last", "best", "ema"] = "last"
    ema_decay: float = 0.95
    label_smoothing: float = 0.0
    adjacent_smoothing: float = 0.0
    # 0.10 lowered the ECE after temperature on all four phantom sets at the same QWK, to
    # 0.006-0.030 with the temperature on the head where validation prefers it
    # (benchmarks/RESULTS.md, runs 8-9); 0 builds the plain softmax network.
    reader_noise: float = 0.1
    class_weighted: bool = False
    augment_strength: float = 1.0
    validate_every: int = 4

    def __post_init__(self) -> None:
        if self.epochs < 1 or (self.patience is not None and self.patience < 1):
            raise ValueError("epochs and patience must be at least 1")
        if self.validate_every < 1:
            raise ValueError(f"validate_every must be at least 1, not {self.validate_every}")
        if self.keep not in ("last", "best", "ema"):
            raise ValueError(f"keep must be 'last', 'best' or 'ema', not {self.keep!r}")
        if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 < self.ema_decay < 1.0:
            raise ValueError("label_smoothing must lie in [0, 1) and ema_decay in (0, 1)")
        if not 0.0 <= self.adjacent_smoothing < 1.0:
            raise ValueError("adjacent_smoothing must lie in [0, 1)")
        if not 0.0 <= self.reader_noise < 0.5:
            raise ValueError(f"reader_noise must lie in [0, 0.5), not {self.reader_noise}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm)")
        if self.loss not in ("ce", "ordinal"):
            raise ValueError(f"loss must be 'ce' or 'ordinal', not {self.loss!r}")
        if not 0.0 < self.conformal_level < 1.0:
            raise ValueError(f"conformal_level must lie in (0, 1), not {self.conformal_level}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready hyper-parameters."""
        data = asdict(self)
        data["depth"] = list(self.depth)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The configuration ``to_dict`` wrote (e.g. ``card.json``'s hyper-parameters)."""
        return cls(**{**data, "depth": tuple(data.get("depth", DEFAULT_DEPTH))})

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with its checkpoint (not where it runs)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def card(self) -> ModelCard:
        """The model card this configuration trains."""
        arch = Architecture(
            self.architecture, self.depth, self.width, self.drop_rate, self.reader_noise
        )
        return ModelCard(
            input_size=self.input_size, architecture=arch, conformal_level=self.conformal_level
        )
