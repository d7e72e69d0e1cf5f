"""What a film's header says about body part and view: knee or not, frontal or not.

Real PACS exports are incomplete: (0018,0015) BodyPartExamined is often empty or a generic
``LEG``/``LOWER LIMB``/``EXTREMITY``, and (0018,5101) ViewPosition is often missing. The coded
attribute decides when it is specific; otherwise the Study/Series descriptions and Protocol
name (site-configurable patterns, defaults in several languages) may; otherwise the verdict is
``unknown`` and the image itself (the localizer) decides. A header that names another body
part wins over everything: koa never grades a chest film because a knee-like shape was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from koa_core.config import Settings
from koa_core.io.record import ImageMetadata

KNEE_BODY_PARTS = frozenset({"KNEE", "GENOU", "KNIE", "RODILLA", "GINOCCHIO", "JOELHO"})
# Coded values that cover a knee without naming it: they defer to the other evidence.
GENERIC_BODY_PARTS = frozenset(
    {"LEG", "LOWERLIMB", "LOWER LIMB", "LOWER_LIMB", "EXTREMITY", "LOWER EXTREMITY", "LOWEXTREMITY"}
)
FRONTAL_VIEWS = frozenset({"PA", "AP"})
# (0018,5101) defined terms for side views, plus the spellings sites send.
LATERAL_VIEWS = frozenset({"LL", "RL", "ML", "LM", "LATERAL", "LAT", "LLO", "RLO"})

KNEE, OTHER, UNKNOWN = "knee", "other", "unknown"
FRONTAL, NOT_FRONTAL = "frontal", "not_frontal"
HEADER, DESCRIPTION = "header", "description"


@dataclass(frozen=True)
class HeaderVerdict:
    """``body_part`` is knee/other/unknown, ``view`` frontal/not_frontal/unknown; each with
    the evidence that decided it (``header``, ``description``, or None while unknown)."""

    body_part: str
    body_part_evidence: str | None
    view: str
    view_evidence: str | None


def _descriptions(meta: ImageMetadata) -> str:
    parts = (meta.study_description, meta.series_description, meta.protocol_name)
    return " | ".join(part for part in parts if part)


def body_part_verdict(meta: ImageMetadata, settings: Settings) -> tuple[str, str | None]:
    """(verdict, evidence) for the body part: the coded value, then the descriptions."""
    coded = (meta.body_part_examined or "").strip().upper()
    if coded in KNEE_BODY_PARTS:
        return KNEE, HEADER
    if coded and coded not in GENERIC_BODY_PARTS:
        return OTHER, HEADER
    if re.search(settings.knee_text_pattern, _descriptions(meta)):
        return KNEE, DESCRIPTION
    return UNKNOWN, None


def view_verdict(meta: ImageMetadata, settings: Settings) -> tuple[str, str | None]:
    """(verdict, evidence) for the view; descriptions that say both (``AP + LAT``) say nothing."""
    coded = (meta.view_position or "").strip().upper()
    if coded in FRONTAL_VIEWS:
        return FRONTAL, HEADER
    if coded in LATERAL_VIEWS:
        return NOT_FRONTAL, HEADER
    text = _descriptions(meta)
    lateral = re.search(settings.lateral_text_pattern, text) is not None
    frontal = re.search(settings.frontal_text_pattern, text) is not None
    if lateral != frontal:
        return (NOT_FRONTAL if lateral else FRONTAL), DESCRIPTION
    return UNKNOWN, None


def header_verdict(meta: ImageMetadata, settings: Settings) -> HeaderVerdict:
    """Both verdicts of one header."""
    return HeaderVerdict(*body_part_verdict(meta, settings), *view_verdict(meta, settings))
