"""Temperature scaling (one scalar fitted on validation logits), and the same with a
grade-noise term for labels that confuse neighbouring grades.

A grader ending in a reader-noise layer (``network.reader_noise_logits``) outputs
``p = softmax(z) @ M``; its classic logits are the head's ``z``, recovered from ``p`` as
``log(p @ M^-1)``. Its temperature may be fitted on either (``fit_probability_temperature``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar

from koa_core.schema import adjacent_mixing

# T outside [1/20, 20] means the logits carry no usable ranking; the bound keeps the
# one-dimensional search finite on degenerate inputs.
LOG_T_BOUNDS = (-math.log(20.0), math.log(20.0))
# log(0) would make a logit of -inf; the floor is far below any softmax output in float32.
LOG_PROB_FLOOR = 1e-12


def _logits_tensor(logits: ArrayLike | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(logits).detach().to(device="cpu", dtype=torch.float64)
    if tensor.ndim != 2:
        raise ValueError(f"logits must be (N, classes); got shape {tuple(tensor.shape)}")
    return tensor


def _check_pairs(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.shape[0] == 0 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"need N >= 1 logits and N labels; got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )


def _checked(
    logits_val: ArrayLike | torch.Tensor, y_val: ArrayLike | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = _logits_tensor(logits_val)
    labels = torch.as_tensor(y_val).detach().to(device="cpu", dtype=torch.long)
    _check_pairs(logits, labels)
    return logits, labels


def _fit_under_mixing(
    logits: torch.Tensor, labels: torch.Tensor, share: float
) -> tuple[float, float]:
    """(validation NLL, T) of the T minimising the NLL of ``softmax(logits / T) @ M(share)``."""
    mixing = torch.from_numpy(adjacent_mixing(share, logits.shape[1]))
    rows = torch.arange(labels.shape[0])

    def nll(log_t: float) -> float:
        probs = torch.softmax(logits / math.exp(log_t), dim=1) @ mixing
        return -float(torch.log(probs[rows, labels].clamp_min(LOG_PROB_FLOOR)).mean())

    # Searching log T keeps T positive and treats over- and under-confidence symmetrically.
    result: Any = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded")
    return float(result.fun), math.exp(float(result.x))


def fit_temperature(logits_val: ArrayLike | torch.Tensor, y_val: ArrayLike | torch.Tensor) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` on validation.

    Args:
        logits_val: raw network outputs on the validation split, shape (N, classes).
        y_val: true class indices, shape (N,).

    Raises:
        ValueError: empty input or mismatched shapes.
    """
    return _fit_under_mixing(*_checked(logits_val, y_val), 0.0)[1]


def apply_temperature(logits: ArrayLike | torch.Tensor, temperature: float) -> NDArray[np.float64]:
    """Class probabilities ``softmax(logits / temperature)``, shape (N, classes).

    Raises:
        ValueError: the temperature is not a positive finite number.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive and finite; got {temperature}")
    probs = torch.softmax(_logits_tensor(logits) / temperature, dim=1)
    return np.asarray(probs.numpy(), dtype=np.float64)


# Adjacent-grade shares tried when fitting the grade-noise term; a grid keeps the fit
# deterministic where a joint search stalled at share 0 on one of the phantom sets.
NOISE_SHARES = np.linspace(0.0, 0.4, 41)


@dataclass(frozen=True)
class GradeNoiseCalibration:
    """A temperature, then ``adjacent_share`` of each grade's probability on its neighbours.

    Labels with adjacent-grade noise cap the accuracy of even the clearest knee below 1; a
    network trained on few images still says 0.97 there, while it is under-confident on
    ambiguous knees. One temperature moves both the same way; the noise term lowers the
    confident end alone (see ``benchmarks/RESULTS.md``).
    """

    temperature: float
    adjacent_share: float

    def apply(self, logits: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """Calibrated class probabilities, shape (N, classes)."""
        return apply_temperature(logits, self.temperature) @ adjacent_mixing(self.adjacent_share)


def fit_grade_noise(
    logits_val: ArrayLike | torch.Tensor, y_val: ArrayLike | torch.Tensor
) -> GradeNoiseCalibration:
    """The temperature and adjacent share minimising validation NLL (share on a grid).

    Raises:
        ValueError: empty input or mismatched shapes.
    """
    logits, labels = _checked(logits_val, y_val)
    fits = [(*_fit_under_mixing(logits, labels, float(s)), float(s)) for s in NOISE_SHARES]
    _, temperature, share = min(fits, key=lambda fit: (fit[0], fit[2]))
    return GradeNoiseCalibration(temperature=temperature, adjacent_share=share)


def head_logits(probs: ArrayLike, reader_share: float = 0.0) -> NDArray[np.float64]:
    """Logits of the head under a reader-noise layer of ``reader_share``: ``log(p @ M^-1)``.

    ``M`` is invertible for shares below 0.5; rounding can leave tiny negative entries,
    floored with the zeros. Share 0 gives ``log p``, usable as logits since softmax is
    shift-invariant.
    """
    p = np.asarray(probs, dtype=np.float64)
    if reader_share:
        p = p @ np.linalg.inv(adjacent_mixing(reader_share, p.shape[1]))
    return np.log(np.clip(p, LOG_PROB_FLOOR, 1.0))


@dataclass(frozen=True)
class Temperature:
    """A temperature and where it applies.

    ``reader_share`` 0: to the output's log-probabilities, ``softmax(log p / T)``. Above
    0: to the head's logits under the network's reader-noise layer, which is then applied
    again: ``softmax(head_logits(p) / T) @ M``, whose confidence stays capped as the
    layer caps it.
    """

    value: float
    reader_share: float = 0.0

    def apply(self, probs: ArrayLike) -> NDArray[np.float64]:
        """Calibrated class probabilities of (N, classes) probabilities."""
        scaled = apply_temperature(head_logits(probs, self.reader_share), self.value)
        return scaled @ adjacent_mixing(self.reader_share, scaled.shape[1])


def fit_probability_temperature(
    val_probs: ArrayLike, val_labels: ArrayLike, reader_share: float = 0.0
) -> Temperature:
    """The temperature of least validation NLL, on the output or, for a grader with a
    reader-noise layer of ``reader_share``, on its head.

    The head's is the classic choice, the layer a fixed map after the softmax; but a
    layer whose share exceeds the validation labels' own noise caps the confidence too
    low, and the output's temperature can then lift it above the cap. Either is one scalar,
    chosen on validation (``benchmarks/RESULTS.md``, run 9).

    Raises:
        ValueError: empty input or mismatched shapes.
    """
    shares = {0.0, float(reader_share)}
    fits = []
    for share in sorted(shares):
        logits, labels = _checked(head_logits(val_probs, share), np.asarray(val_labels))
        nll, value = _fit_under_mixing(logits, labels, share)
        fits.append((nll, Temperature(value, share)))
    return min(fits, key=lambda fit: fit[0])[1]
