"""Temperature scaling: one scalar fitted on validation logits to calibrate the softmax."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar

# T outside [1/20, 20] means the logits carry no usable ranking; the bound keeps the
# one-dimensional search finite on degenerate inputs.
LOG_T_BOUNDS = (-math.log(20.0), math.log(20.0))


def _logits_tensor(logits: ArrayLike | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(logits).detach().to(device="cpu", dtype=torch.float64)
    if tensor.ndim != 2:
        raise ValueError(f"logits must be (N, classes); got shape {tuple(tensor.shape)}")
    return tensor


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
    if logits.shape[0] == 0 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"need N >= 1 logits and N labels; got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )

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
