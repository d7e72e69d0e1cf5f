"""The model registry: immutable versions, a champion pointer with its audit log, the rule.

Layout under ``Settings().models_dir``::

    versions/<version>/weights.pt      state_dict, as training wrote it    (store)
    versions/<version>/card.json       card, provenance, metrics at registration (store)
    versions/<version>/metrics.jsonl   metrics recorded later, append-only (annotations)
    champion                           JSON pointer to the serving version  (champion)
    promotions.jsonl                   one line per promotion decision      (champion)

``policy`` holds the promotion rule and ``provenance`` the code revision; ``facade``'s
``ModelRegistry`` composes them. Every write is atomic or a single appended line, so a
crash leaves the registry as it was before the write or as it is after it.
"""

from __future__ import annotations

from koa_core.registry.facade import ModelRegistry
from koa_core.registry.localizers import LocalizerRegistry, champion_localizer
from koa_core.registry.policy import PromotionDecision, PromotionPolicy, should_promote
from koa_core.registry.store import ModelVersion

__all__ = [
    "LocalizerRegistry",
    "ModelRegistry",
    "ModelVersion",
    "PromotionDecision",
    "PromotionPolicy",
    "champion_localizer",
    "should_promote",
]
