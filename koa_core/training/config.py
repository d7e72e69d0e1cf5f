"""The hyper-parameters of one training run, stored in the model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from koa_core.model.card import (
    DEFAULT_CONFORMAL_LEVEL,
    DEFAULT_DEPTH,
    DEFAULT_WIDTH,
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

    ``loss="ordinal"`` adds ``ordinal_weight`` x |expected grade - true grade| to the
    class-weighted cross-entropy, so confusing KL1 with KL4 costs more than with KL2,
    while the five softmax outputs (and P(KL >= 2) from them) stay as they are.
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: Literal["ce", "ordinal"] = "ordinal"
    ordinal_weight: float = 0.5
    patience: int = 5
    seed: int = 0
    input_size: int = 224
    architecture: str = "resnet"
    depth: tuple[int, ...] = DEFAULT_DEPTH
    width: int = DEFAULT_WIDTH
    drop_rate: float = 0.2
    augment: bool = True
    device: str = "auto"
    amp: bool = True
    threads: int | None = None
    cache_dir: str | None = None
    max_skipped_share: float = 0.1
    conformal_level: float = DEFAULT_CONFORMAL_LEVEL

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1:
            raise ValueError("epochs and patience must be at least 1")
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
        arch = Architecture(self.architecture, self.depth, self.width, self.drop_rate)
        return ModelCard(
            input_size=self.input_size, architecture=arch, conformal_level=self.conformal_level
        )
