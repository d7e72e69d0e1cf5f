"""Which knee is which: the patient's side of each knee the localizer found on a film.

A film is displayed with the patient's right on the viewer's left (PA and AP alike, by
convention of the modality's display). So on a bilateral film the knee on the viewer's left
is the right knee; on a one-knee film (0020,0062) ImageLaterality says which. Either way the
anatomy is a second witness: the fibula is lateral, so a right knee as displayed has it on
the viewer's left. The localizer reports that as ``p_right_looking``; when it confidently
contradicts the header or the position, the film is refused (``laterality_conflict``),
because a wrong-side report is worse than none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from koa_core.errors import LateralityConflictError, LateralityUnknownError, NoKneeFoundError

HEADER, POSITION, ANATOMY = "header", "position", "anatomy"


class Candidate(Protocol):
    """A knee the localizer found: centre (x column, y row), score and handedness."""

    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...
    @property
    def score(self) -> float: ...
    @property
    def p_right_looking(self) -> float: ...


@dataclass(frozen=True)
class PlacedKnee:
    """A knee with its patient side and what decided the side."""

    side: str
    x: float
    y: float
    score: float
    side_evidence: str


def _contradicts(side: str, p_right_looking: float, confidence: float) -> bool:
    return p_right_looking <= 1.0 - confidence if side == "R" else p_right_looking >= confidence


def _bilateral(
    path: Path, pair: Sequence[Candidate], laterality: str | None, confidence: float
) -> list[PlacedKnee]:
    if laterality is not None:
        raise LateralityConflictError(path, f"ImageLaterality {laterality} but two knees found")
    viewer_left, viewer_right = sorted(pair, key=lambda knee: knee.x)
    placed = [
        PlacedKnee("R", viewer_left.x, viewer_left.y, viewer_left.score, POSITION),
        PlacedKnee("L", viewer_right.x, viewer_right.y, viewer_right.score, POSITION),
    ]
    for knee, found in zip(placed, (viewer_left, viewer_right), strict=True):
        if _contradicts(knee.side, found.p_right_looking, confidence):
            raise LateralityConflictError(
                path,
                f"the knee on the viewer's {'left' if knee.side == 'R' else 'right'} looks like a"
                f" {'left' if knee.side == 'R' else 'right'} knee"
                f" (P(right-looking) {found.p_right_looking:.2f}): film mirrored?",
            )
    return placed


def _unilateral(
    path: Path, knee: Candidate, laterality: str | None, confidence: float
) -> PlacedKnee:
    anatomy_side = (
        "R"
        if knee.p_right_looking >= confidence
        else "L"
        if knee.p_right_looking <= 1.0 - confidence
        else None
    )
    if laterality is None:
        if anatomy_side is None:
            raise LateralityUnknownError(
                path,
                f"no ImageLaterality and anatomy unsure (P(right) {knee.p_right_looking:.2f})",
            )
        return PlacedKnee(anatomy_side, knee.x, knee.y, knee.score, ANATOMY)
    if _contradicts(laterality, knee.p_right_looking, confidence):
        raise LateralityConflictError(
            path,
            f"ImageLaterality {laterality} but the knee looks like a"
            f" {'left' if laterality == 'R' else 'right'} one"
            f" (P(right) {knee.p_right_looking:.2f})",
        )
    return PlacedKnee(laterality, knee.x, knee.y, knee.score, HEADER)


def place_knees(
    path: Path,
    candidates: Sequence[Candidate],
    laterality: str | None,
    *,
    min_score: float,
    confidence: float,
) -> list[PlacedKnee]:
    """The knees of one film with their sides, patient's right first.

    Args:
        path: The film, for error messages.
        candidates: The localizer's knees, best first.
        laterality: (0020,0062) ImageLaterality ``"R"``/``"L"``, or None (absent, ``B``, ``U``).
        min_score: Least localizer score that counts as a knee.
        confidence: Anatomy's side probability that overrules or stands in for the header.

    Raises:
        NoKneeFoundError: no candidate reaches ``min_score``.
        LateralityConflictError: header, position and anatomy disagree.
        LateralityUnknownError: one knee, no header side, anatomy unsure.
    """
    knees = [knee for knee in candidates if knee.score >= min_score][:2]
    if not knees:
        best = max((knee.score for knee in candidates), default=0.0)
        raise NoKneeFoundError(path, f"best localizer score {best:.2f} < {min_score:.2f}")
    if len(knees) == 2:
        return _bilateral(path, knees, laterality, confidence)
    return [_unilateral(path, knees[0], laterality, confidence)]
