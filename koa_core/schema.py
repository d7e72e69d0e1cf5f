"""What every part of koa agrees on, written once: grades, column names, file names, P(KOA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

NUM_CLASSES = 5
GRADES = tuple(range(NUM_CLASSES))
CLASS_NAMES = tuple(f"KL{grade}" for grade in GRADES)
PROBABILITY_COLUMNS = tuple(f"p_kl{grade}" for grade in GRADES)
# Radiographic osteoarthritis is KL >= 2 (definite osteophyte), by the usual convention.
KOA_MIN_GRADE = 2

# A model directory (a training run's output or a registered version) holds these.
WEIGHTS_NAME = "weights.pt"
CARD_NAME = "card.json"


def p_koa(probabilities: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """P(KL >= 2) = p2 + p3 + p4 of (N, 5) grade probabilities, clipped to [0, 1].

    The clip only removes float rounding: five softmax outputs can sum to 1 + 1e-7.
    """
    values: npt.NDArray[Any] = np.asarray(probabilities, dtype=np.float64)
    return np.asarray(np.clip(values[:, KOA_MIN_GRADE:].sum(axis=1), 0.0, 1.0), np.float64)


def adjacent_mixing(share: float, num_classes: int = NUM_CLASSES) -> npt.NDArray[np.float64]:
    """Row-stochastic matrix moving ``share`` of each grade onto its neighbours.

    Split between the two neighbours; all on the one for KL0 and KL4. Row ``g`` is the
    distribution of the grade a reader records when the knee's grade is ``g``.
    """
    mixing = np.zeros((num_classes, num_classes))
    for grade in range(num_classes):
        neighbours = [g for g in (grade - 1, grade + 1) if 0 <= g < num_classes]
        mixing[grade, neighbours] = share / len(neighbours)
        mixing[grade, grade] = 1.0 - share
    return mixing
