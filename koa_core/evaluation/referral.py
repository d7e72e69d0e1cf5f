"""Refer-to-human: whether a knee's result needs a reader, and the stable codes saying why."""

from __future__ import annotations

from collections.abc import Sequence

UNCERTAIN_GRADE = "uncertain_grade"
"""The prediction set holds more than one KL grade."""
LOW_LOCALIZER_SCORE = "low_localizer_score"
"""The localizer was not sure this box is a knee joint."""
INPUT_OUT_OF_RANGE = "input_out_of_range"
"""The image's statistics lie outside what the model was trained on."""
REASONS = (UNCERTAIN_GRADE, LOW_LOCALIZER_SCORE, INPUT_OUT_OF_RANGE)
SEPARATOR = ";"


def referral(
    grade_set: Sequence[int],
    localizer_score: float | None,
    min_localizer_score: float,
    input_in_range: bool,
) -> tuple[bool, str | None]:
    """Whether to refer one knee to a human reader, and why.

    Args:
        grade_set: the knee's conformal prediction set (``prediction_sets``), never empty.
        localizer_score: the localizer's confidence in the knee's box; ``None`` when the
            box did not come from a localizer (a single-knee ROI), which never refers.
        min_localizer_score: the least score trusted without a reader.
        input_in_range: the image statistics lie inside the training range.

    Returns:
        ``(refer, reason)``: ``reason`` joins the codes of ``REASONS`` that apply with
        ``";"`` in that order, or is ``None`` when nothing refers the knee.
    """
    reasons = []
    if len(set(grade_set)) > 1:
        reasons.append(UNCERTAIN_GRADE)
    if localizer_score is not None and not localizer_score >= min_localizer_score:
        # ``not >=`` also refers a NaN score: an unknown confidence is not a high one.
        reasons.append(LOW_LOCALIZER_SCORE)
    if not input_in_range:
        reasons.append(INPUT_OUT_OF_RANGE)
    return bool(reasons), SEPARATOR.join(reasons) or None
