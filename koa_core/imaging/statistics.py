"""Intensity statistics of a preprocessed image, the columns the ``model_input`` checks read."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

STATISTIC_NAMES = ("mean", "std", "min", "max", "fraction_saturated", "fraction_black")


def input_statistics(pixels: npt.NDArray[np.floating]) -> dict[str, float]:
    """Summary statistics of one model input whose pixels are scaled to [0, 1].

    ``fraction_saturated`` is the share of pixels at (or above) 1.0 and ``fraction_black``
    the share at (or below) 0.0: preprocessing clips to these bounds, so a large share at
    either end means a burned-out or empty exposure rather than anatomy.

    Args:
        pixels: The preprocessed image, any shape, values nominally in [0, 1].

    Returns:
        A dict keyed by ``STATISTIC_NAMES``; every value is NaN for an empty array or one
        holding a NaN (so the checks quarantine it as ``statistics_missing``).
    """
    values = np.asarray(pixels, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        return dict.fromkeys(STATISTIC_NAMES, float("nan"))
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "fraction_saturated": float(np.count_nonzero(values >= 1.0) / values.size),
        "fraction_black": float(np.count_nonzero(values <= 0.0) / values.size),
    }
