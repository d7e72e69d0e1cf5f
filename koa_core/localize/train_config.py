"""The hyper-parameters of one localizer training run, stored in its card."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from koa_core.localize.card import LocalizerArchitecture


@dataclass(frozen=True)
class LocalizerTrainConfig:
    """Hyper-parameters of one localizer training run (JSON-serialisable).

    Attributes:
        epochs: passes over the training films (each pass draws fresh augmentations).
        repeats: augmented samples per training film and epoch.
        batch_size: samples per optimiser step.
        lr: peak learning rate of the one-cycle schedule (AdamW).
        weight_decay: AdamW weight decay.
        seed: initialisation, augmentation and the validation split.
        mm_per_px: the spacing films are resampled to.
        canvas_px: side of a training sample at ``mm_per_px``.
        widths, decoder_width, output_stride: the network (``LocalizerArchitecture``).
        sigma_mm: spread of the heatmap target's Gaussian.
        handed_weight: weight of the handedness loss beside the heatmap's.
        view_weight: weight of the lateral-view loss; 0 trains a network without the
            view head (``LocalizerArchitecture.view_head``).
        val_share: share of films held out for validation (at least one).
        augment: photometric and occlusion augmentation (see ``augment``) on a share
            ``hard_share`` of the samples; the rest, and every sample when off, get the
            geometric warp, flip and crop only. Mixing in easy samples trains several
            times faster than all hard, at the same robustness (measured).
        amp: bf16 autocast; None: only where the CPU runs bf16 natively (AMX or
            AVX-512-bf16), where it halves a step; elsewhere it is emulated and slower.
        threads: torch CPU threads while training (None: as set); restored afterwards.
    """

    epochs: int = 20
    repeats: int = 1
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    mm_per_px: float = 3.0
    canvas_px: int = 128
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    decoder_width: int = 32
    output_stride: int = 4
    sigma_mm: float = 10.0
    handed_weight: float = 2.0
    view_weight: float = 4.0
    val_share: float = 0.15
    augment: bool = True
    hard_share: float = 0.5
    amp: bool | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.repeats < 1:
            raise ValueError("epochs and repeats must be at least 1")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm)")
        if self.canvas_px % 2 ** len(self.widths):
            raise ValueError(f"canvas_px must be a multiple of {2 ** len(self.widths)}")
        if not 0 < self.val_share < 1:
            raise ValueError("val_share must lie strictly between 0 and 1")
        if not 0 <= self.hard_share <= 1:
            raise ValueError("hard_share must lie between 0 and 1")

    def architecture(self) -> LocalizerArchitecture:
        """The network this configuration trains."""
        return LocalizerArchitecture(
            widths=self.widths,
            decoder_width=self.decoder_width,
            output_stride=self.output_stride,
            view_head=self.view_weight > 0,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready hyper-parameters."""
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocalizerTrainConfig:
        """The configuration ``to_dict`` wrote."""
        values = dict(data)
        if "widths" in values:
            values["widths"] = tuple(values["widths"])
        return cls(**values)
