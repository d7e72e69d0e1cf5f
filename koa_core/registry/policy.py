"""The promotion rule: when a challenger may replace the champion, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from koa_core.config import Settings, get_settings

# Rounding in the metrics must not flip a decision that sits exactly on a threshold.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class PromotionPolicy:
    """The rule's thresholds (defaults: ``Settings.promotion_*``).

    Attributes:
        min_qwk_gain: how much higher the challenger's test QWK must be than the champion's.
        max_auc_loss: how much lower its test AUC(KL>=2) may be.
        min_qwk: the quality floor: no test QWK below it is ever made champion by the rule.
    """

    min_qwk_gain: float
    max_auc_loss: float
    min_qwk: float

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PromotionPolicy:
        """The policy the deployment is configured with (``KOA_PROMOTION_*``)."""
        settings = settings or get_settings()
        return cls(
            settings.promotion_min_qwk_gain,
            settings.promotion_max_auc_loss,
            settings.promotion_min_qwk,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a challenger replaces the champion, and why.

    ``below_floor`` marks a refusal for quality alone: the challenger's test QWK is under
    the policy's floor (or undefined), whatever the champion is.
    """

    promote: bool
    reason: str
    below_floor: bool = False


def _test_set_signature(metrics: Mapping[str, Any]) -> tuple[int, ...] | None:
    rows = metrics.get("per_class")
    if rows:
        return tuple(int(row["support"]) for row in rows)
    return (int(metrics["n_samples"]),) if "n_samples" in metrics else None


def _floor_refusal(
    challenger_metrics: Mapping[str, Any], policy: PromotionPolicy
) -> PromotionDecision | None:
    qwk = challenger_metrics.get("qwk")
    if qwk is not None and float(qwk) >= policy.min_qwk - TOLERANCE:
        return None
    shown = "undefined" if qwk is None else f"{float(qwk):.4f}"
    return PromotionDecision(
        False,
        f"test QWK {shown} is below the quality floor {policy.min_qwk:g}"
        " (KOA_PROMOTION_MIN_QWK); only a forced promotion can make it champion",
        below_floor=True,
    )


def _test_set_refusal(
    champion_metrics: Mapping[str, Any], challenger_metrics: Mapping[str, Any]
) -> PromotionDecision | None:
    old_data = champion_metrics.get("dataset_fingerprint")
    new_data = challenger_metrics.get("dataset_fingerprint")
    if old_data is not None and new_data is not None and old_data != new_data:
        return PromotionDecision(
            False, f"not the same test set (datasets {old_data[:12]} vs {new_data[:12]})"
        )
    old_set = _test_set_signature(champion_metrics)
    new_set = _test_set_signature(challenger_metrics)
    if old_set is not None and new_set is not None and old_set != new_set:
        return PromotionDecision(
            False, f"not the same test set (grade counts {old_set} vs {new_set})"
        )
    return None


def _comparison(
    champion_metrics: Mapping[str, Any],
    challenger_metrics: Mapping[str, Any],
    policy: PromotionPolicy,
) -> PromotionDecision:
    keys = ("qwk", "auc_koa")
    values = [
        metrics.get(key) for metrics in (champion_metrics, challenger_metrics) for key in keys
    ]
    if any(value is None for value in values):
        return PromotionDecision(False, "QWK or AUC(KL>=2) undefined on this test set")
    old_qwk, old_auc, new_qwk, new_auc = (float(value) for value in values if value is not None)
    gain, loss = new_qwk - old_qwk, old_auc - new_auc
    summary = (
        f"QWK {old_qwk:.4f} -> {new_qwk:.4f} ({gain:+.4f}), "
        f"AUC(KL>=2) {old_auc:.4f} -> {new_auc:.4f} ({-loss:+.4f})"
    )
    if gain < policy.min_qwk_gain - TOLERANCE:
        return PromotionDecision(
            False, f"{summary}: QWK gain below the required {policy.min_qwk_gain:g}"
        )
    if loss > policy.max_auc_loss + TOLERANCE:
        return PromotionDecision(
            False, f"{summary}: AUC loss above the allowed {policy.max_auc_loss:g}"
        )
    return PromotionDecision(True, f"{summary}: beats the champion")


def should_promote(
    champion_metrics: Mapping[str, Any] | None,
    challenger_metrics: Mapping[str, Any],
    policy: PromotionPolicy | None = None,
) -> PromotionDecision:
    """The promotion rule.

    A challenger whose test QWK is under ``policy.min_qwk`` (or undefined) is refused,
    first model included. Otherwise, with no champion, it is promoted; with one, it
    replaces it only if, on the same test set, its QWK is at least ``min_qwk_gain`` higher
    and its AUC(KL>=2) at most ``max_auc_loss`` lower.

    Args:
        champion_metrics: the champion's test metrics; None when there is no champion.
        challenger_metrics: the challenger's, on the same test set. Both are
            ``EvaluationMetrics.to_dict()`` outputs (keys ``qwk``, ``auc_koa``,
            ``per_class``), optionally with their ``dataset_fingerprint``.
        policy: default ``PromotionPolicy.from_settings()``.
    """
    policy = policy or PromotionPolicy.from_settings()
    refusal = _floor_refusal(challenger_metrics, policy)
    if refusal is not None:
        return refusal
    if champion_metrics is None:
        return PromotionDecision(True, "no champion yet: the first model is promoted")
    refusal = _test_set_refusal(champion_metrics, challenger_metrics)
    if refusal is not None:
        return refusal
    return _comparison(champion_metrics, challenger_metrics, policy)
