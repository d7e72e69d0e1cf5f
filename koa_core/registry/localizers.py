"""Knee-localizer versions: their own store, champion pointer and audit log, their own rule.

They live under ``Settings().localizers_dir`` (``models/localizers``), laid out like the
grader's registry, so promoting a localizer never moves the grader's champion. The rule
is absolute, not a comparison: a localizer serves when its validation films' joint-centre
error is small enough (median and 99th percentile), no knee was missed or invented, and
every found knee's handedness was right; ``force_champion`` overrides it, logged as forced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from koa_core.config import Settings, get_settings
from koa_core.errors import LocalizerNotFoundError
from koa_core.localize.card import LocalizerCard, read_localizer_card
from koa_core.localize.find import Localizer, load_localizer
from koa_core.registry.champion import PromotionRecord
from koa_core.registry.facade import Ref, VersionRegistry
from koa_core.registry.policy import TOLERANCE, PromotionDecision
from koa_core.registry.store import ModelVersion
from koa_core.schema import CARD_NAME

VALIDATION = "validation"


@dataclass(frozen=True)
class LocalizerPolicy:
    """Thresholds of the localizer rule (defaults: ``Settings.localizer_*``)."""

    max_median_error_mm: float
    max_p99_error_mm: float
    min_handedness_accuracy: float

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> LocalizerPolicy:
        settings = settings or get_settings()
        return cls(
            settings.localizer_max_median_error_mm,
            settings.localizer_max_p99_error_mm,
            settings.localizer_min_handedness_accuracy,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _figure(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def should_promote_localizer(
    metrics: Mapping[str, Any], policy: LocalizerPolicy | None = None
) -> PromotionDecision:
    """The localizer rule on its validation metrics (``LocalizerMetrics.to_dict()``)."""
    policy = policy or LocalizerPolicy.from_settings()
    median, p99 = _figure(metrics, "median_error_mm"), _figure(metrics, "p99_error_mm")
    handed = _figure(metrics, "handedness_accuracy")
    missed, invented = int(metrics.get("missed", 0)), int(metrics.get("invented", 0))
    summary = (
        f"validation median {median if median is None else round(median, 2)} mm,"
        f" p99 {p99 if p99 is None else round(p99, 2)} mm, {missed} missed,"
        f" {invented} invented, handedness {handed if handed is None else round(handed, 4)}"
    )
    failures = []
    if median is None or median > policy.max_median_error_mm + TOLERANCE:
        failures.append(f"median above {policy.max_median_error_mm:g} mm")
    if p99 is None or p99 > policy.max_p99_error_mm + TOLERANCE:
        failures.append(f"p99 above {policy.max_p99_error_mm:g} mm")
    if missed or invented:
        failures.append("missed or invented knees")
    if handed is None or handed < policy.min_handedness_accuracy - TOLERANCE:
        failures.append(f"handedness below {policy.min_handedness_accuracy:g}")
    if failures:
        return PromotionDecision(False, f"{summary}: {', '.join(failures)}", below_floor=True)
    return PromotionDecision(True, f"{summary}: meets the localizer rule")


class LocalizerRegistry(VersionRegistry):
    """Registered localizer versions under ``root`` (default ``Settings().localizers_dir``)."""

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root if root is not None else get_settings().localizers_dir)

    def register(self, source: Path | tuple[Path, Path], **provenance: Any) -> ModelVersion:
        """A new immutable localizer version of a training output (``TrainedLocalizer.save``).

        Its card's validation metrics and data fingerprint are registered with it.

        Raises:
            CorruptCheckpointError: the source's card is not a localizer card.
            ModelNotFoundError: the weights or card are missing.
        """
        card_path = source / CARD_NAME if isinstance(source, Path) else source[1]
        card = read_localizer_card(card_path)
        provenance.setdefault("metrics", card.metrics)
        provenance.setdefault("hyperparameters", card.hyperparameters)
        provenance.setdefault("data_fingerprint", {"fingerprint": card.data_fingerprint})
        return super().register(source, **provenance)

    def card(self, ref: Ref) -> LocalizerCard:
        """The registered card of ``ref`` (version, sha256, metrics filled in)."""
        return LocalizerCard.from_document(self.get(ref).document)

    def load(self, ref: Ref = "champion") -> Localizer:
        """The localizer ``ref`` names, weights verified, loaded once per process.

        Raises:
            ModelNotFoundError: nothing matches ``ref`` (e.g. no champion yet).
            CorruptCheckpointError: its weights fail their checksum.
        """
        return load_localizer(self.verify(ref).path)

    def promote(self, ref: Ref, policy: LocalizerPolicy | None = None) -> PromotionRecord:
        """Apply the localizer rule to ``ref``'s validation metrics; move the pointer if it
        passes; log the decision either way.

        Raises:
            CorruptCheckpointError: the version's weights fail their checksum.
        """
        policy = policy or LocalizerPolicy.from_settings()
        with self.pointer.lock():
            found = self.verify(ref)
            current = self.pointer.version_id()
            if current == found.version:
                decision = PromotionDecision(False, f"{found.version} is already the champion")
            else:
                decision = should_promote_localizer(found.metrics.get(VALIDATION, {}), policy)
            record = PromotionRecord.of_rule(found.version, current, decision, policy.to_dict())
            self.pointer.decide(record)
        return record


NO_LOCALIZER = (
    "no champion localizer: koa finds the knees on whole films with one. Train one with"
    " `koa train-localizer --data DIR --labels CSV --promote` (`koa phantoms --film mixed"
    " --out DIR` makes synthetic films with labels), or run `make demo`, which trains one"
)


def champion_localizer(root: Path | None = None) -> ModelVersion:
    """The champion localizer's version, checked before a night reads any file.

    Raises:
        LocalizerNotFoundError: there is none; the message says how to get one.
    """
    champion = LocalizerRegistry(root).champion()
    if champion is None:
        raise LocalizerNotFoundError(NO_LOCALIZER)
    return champion
