"""Find the knee joints on a whole film: the public entry point of the localizer.

``find_knees`` returns at most two candidates above the card's low candidate threshold,
best first, and the probability that the film is a lateral view; the caller decides which
scores it accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from koa_core.errors import CorruptCheckpointError
from koa_core.localize.card import LocalizerCard, read_localizer_card
from koa_core.localize.film_input import Resampled, network_tensor, prepare_film
from koa_core.localize.heatmap import decode_peaks
from koa_core.localize.network import VIEW, LocalizerNet, build_localizer, view_logits
from koa_core.localize.weights import load_weights
from koa_core.schema import CARD_NAME, WEIGHTS_NAME

MAX_KNEES = 2


@dataclass(frozen=True)
class FoundKnee:
    """One knee joint found on a film.

    Attributes:
        x: joint centre column, in pixels (indices) of the image passed in.
        y: joint centre row.
        score: the heatmap peak, in [0, 1].
        p_right_looking: probability that the knee looks like a right knee as displayed
            (fibula on the viewer's left).
    """

    x: float
    y: float
    score: float
    p_right_looking: float


@dataclass(frozen=True)
class Findings:
    """What the localizer saw on one film: its knees (best first) and ``p_lateral``, the
    probability that the film is a lateral view (None for a localizer without a view head)."""

    knees: tuple[FoundKnee, ...]
    p_lateral: float | None


@dataclass(frozen=True)
class Localizer:
    """A loaded localizer network (eval mode) and its card."""

    model: LocalizerNet
    card: LocalizerCard


def localizer_from_state(card: LocalizerCard, state: dict[str, torch.Tensor]) -> Localizer:
    """A ``Localizer`` for ``card`` holding ``state``.

    Raises:
        CorruptCheckpointError: the weights do not fit the card's architecture.
    """
    model = build_localizer(card.architecture)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as error:
        raise CorruptCheckpointError(
            f"weights do not match architecture {card.architecture}: {error}"
        ) from error
    return Localizer(model.eval(), card)


@lru_cache(maxsize=8)
def _load(directory: str) -> Localizer:
    path = Path(directory)
    card = read_localizer_card(path / CARD_NAME)
    return localizer_from_state(card, load_weights(path / WEIGHTS_NAME, card.weights_sha256))


def load_localizer(version_dir: Path) -> Localizer:
    """The localizer stored in ``version_dir`` (``weights.pt`` + ``card.json``), loaded once
    per process (a registered version never changes).

    Raises:
        CorruptCheckpointError: the card or weights are missing, altered or mismatched.
    """
    return _load(str(Path(version_dir).resolve()))


def _p_lateral(maps: torch.Tensor, film: Resampled, stride: int) -> float | None:
    """The view head's answer over the film's own cells (not the stride padding's)."""
    if maps.shape[0] <= VIEW:
        return None
    rows, columns = (-(-side // stride) for side in film.pixels.shape)
    return float(torch.sigmoid(view_logits(maps[None, :, :rows, :columns].float()))[0])


def locate(film: Resampled, localizer: Localizer) -> Findings:
    """Knee joints on a film already resampled and windowed by ``prepare_film``, in the
    original film's pixels, best first, at most two; and whether it is a lateral view."""
    card = localizer.card
    tensor = network_tensor(film.pixels, card.normalisation, localizer.model.min_stride)
    with torch.inference_mode():
        maps = localizer.model(tensor)[0]
    peaks = decode_peaks(
        maps,
        card.architecture.output_stride,
        threshold=card.candidate_threshold,
        # Two spare candidates in case a peak lies in the padding and is dropped below.
        max_peaks=MAX_KNEES + 2,
        min_separation_px=card.min_separation_mm / card.mm_per_px,
    )
    rows, columns = film.original_shape
    found = []
    for peak in peaks:
        x, y = film.to_original(peak.x, peak.y)
        # A peak in the stride padding lies off the film: no joint can be there.
        if -0.5 <= x <= columns - 0.5 and -0.5 <= y <= rows - 0.5:
            found.append(FoundKnee(x, y, peak.score, peak.p_right_looking))
    p_lateral = _p_lateral(maps, film, card.architecture.output_stride)
    return Findings(tuple(found[:MAX_KNEES]), p_lateral)


def find_knees(image: npt.NDArray[np.float32], spacing_mm: float, localizer: Localizer) -> Findings:
    """Knee joints on a film, best first, at most two, each scored at least the card's
    ``candidate_threshold``; and the probability that the film is a lateral view.

    Args:
        image: the film, 2-D, bone bright, any intensity range.
        spacing_mm: its pixel spacing (as decoded).
        localizer: from ``load_localizer``.

    Raises:
        ValueError: ``image`` is not 2-D or ``spacing_mm`` is not positive.
    """
    card = localizer.card
    return locate(prepare_film(image, spacing_mm, card.mm_per_px, card.normalisation), localizer)
