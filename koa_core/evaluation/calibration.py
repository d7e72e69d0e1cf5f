"""Temperature scaling (one scalar fitted on validation logits), and the same with a
grade-noise term for labels that confuse neighbouring grades."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar

from koa_core.schema import adjacent_mixing

# T outside [1/20, 20] means the logits carry no usable ranking; the bound keeps the
# one-dimensional search finite on degenerate inputs.
LOG_T_BOUNDS = (-math.log(20.0), math.log(20.0))


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


def fit_temperature(logits_val: ArrayLike | torch.Tensor, y_val: ArrayLike | torch.Tensor) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` on validation.

    Args:
        logits_val: raw network outputs on the validation split, shape (N, classes).
        y_val: true class indices, shape (N,).

    Raises:
        ValueError: empty input or mismatched shapes.
    """
    logits = _logits_tensor(logits_val)
    labels = torch.as_tensor(y_val).detach().to(device="cpu", dtype=torch.long)
    _check_pairs(logits, labels)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    # Searching log T keeps T positive and treats over- and under-confidence symmetrically.
    result: Any = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded")
    return math.exp(float(result.x))


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
    logits = _logits_tensor(logits_val)
    labels = torch.as_tensor(y_val).detach().to(device="cpu", dtype=torch.long)
    _check_pairs(logits, labels)
    rows = torch.arange(labels.shape[0])

    def nll(log_t: float, share: float) -> float:
        probs = torch.softmax(logits / math.exp(log_t), dim=1) @ torch.from_numpy(
            adjacent_mixing(share)
        )
        return -float(torch.log(probs[rows, labels].clamp_min(1e-12)).mean())

    fits = []
    for share in NOISE_SHARES:
        result: Any = minimize_scalar(
            lambda log_t, s=float(share): nll(log_t, s), bounds=LOG_T_BOUNDS, method="bounded"
        )
        fits.append((float(result.fun), float(share), math.exp(float(result.x))))
    _, share, temperature = min(fits)
    return GradeNoiseCalibration(temperature=temperature, adjacent_share=share)
