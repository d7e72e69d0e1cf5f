"""The knee columns rows need since scores became one row per knee (schema version 2)."""

from __future__ import annotations

from typing import Any

from koa_core.storage.results import SCORES_SCHEMA_VERSION


def prepared_knee(side: str = "R", joint_x: float = 400.0) -> dict[str, Any]:
    """The knee keys of a prepared (``koa_core.pipeline.prepare``) row."""
    return {
        "knee_side": side,
        "joint_x": joint_x,
        "joint_y": 500.0,
        "roi_mm": 140.0,
        "localizer_score": 0.97,
        "knee_evidence": "body_part=header;view=header;side=header",
        "grade_set": [1, 2],
        "refer": True,
        "refer_reason": "uncertain_grade",
    }


def scores_knee(side: str = "R", joint_x: float = 400.0) -> dict[str, Any]:
    """The knee columns of a ``scores`` table row."""
    knee = prepared_knee(side, joint_x)
    return {
        **{key: value for key, value in knee.items()},
        "localizer_version": "loc-1",
        "schema_version": SCORES_SCHEMA_VERSION,
    }
