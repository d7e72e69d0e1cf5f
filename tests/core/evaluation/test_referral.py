"""Tests for the refer-to-human rule: each reason alone, together, and none."""

from __future__ import annotations

import math

import pytest

from koa_core.evaluation.referral import referral


@pytest.mark.parametrize(
    ("grade_set", "score", "in_range", "expected"),
    [
        ((2,), 0.9, True, (False, None)),
        ((1, 2), 0.9, True, (True, "uncertain_grade")),
        ((2,), 0.2, True, (True, "low_localizer_score")),
        ((2,), 0.9, False, (True, "input_out_of_range")),
        ((0, 1, 2), 0.2, False, (True, "uncertain_grade;low_localizer_score;input_out_of_range")),
        ((3, 4), 0.9, False, (True, "uncertain_grade;input_out_of_range")),
        ((2,), 0.5, True, (False, None)),  # the floor itself is trusted
        ((2,), math.nan, True, (True, "low_localizer_score")),
        ((2,), None, True, (False, None)),  # no localizer: nothing to doubt
    ],
)
def test_referral_names_every_reason_that_applies(
    grade_set: tuple[int, ...],
    score: float | None,
    in_range: bool,
    expected: tuple[bool, str | None],
) -> None:
    assert referral(grade_set, score, 0.5, in_range) == expected
