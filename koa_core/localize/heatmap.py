"""CenterNet-style heatmap targets and their decoding into knee candidates.

Pixel ``(x, y)`` (indices: its centre lies at ``x + 0.5``) falls in cell
``(floor((x + 0.5) / s), floor((y + 0.5) / s))`` of the output grid (``s`` the output
stride). Its targets: a Gaussian bump of heat centred on the exact position, the offset
``((x + 0.5) / s - column, (y + 0.5) / s - row)`` in [0, 1) at that cell, and its
handedness (1 = looks like a right knee) at the cell and its 8 neighbours, so a
peak found one cell off still reads a trained handedness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from koa_core.localize.network import HANDED, HEAT, OFFSET_X, OFFSET_Y


@dataclass(frozen=True)
class Peak:
    """One decoded candidate, in input pixels of the network."""

    x: float
    y: float
    score: float
    p_right_looking: float


@dataclass(frozen=True)
class Targets:
    """Training targets of a batch at output resolution (N, H, W) each.

    ``heat`` is the Gaussian target, ``centre`` 1 at each knee's cell, ``offset`` (N, 2,
    H, W) valid where ``centre``, ``handed`` valid where ``handed_mask``; ``lateral`` (N,)
    is 1 for a lateral view, ``view_heat`` and ``view_centre`` its joint's heat and cell
    (zero where it has none, or its joint is not known).
    """

    heat: torch.Tensor
    centre: torch.Tensor
    offset: torch.Tensor
    handed: torch.Tensor
    handed_mask: torch.Tensor
    lateral: torch.Tensor
    view_heat: torch.Tensor
    view_centre: torch.Tensor


@dataclass(frozen=True)
class KneeTarget:
    """A knee as a training target: its centre in input pixels (indices), whether it looks right."""

    x: float
    y: float
    right_looking: bool


def encode_targets(
    knees: Sequence[Sequence[KneeTarget]],
    shape: tuple[int, int],
    stride: int,
    sigma_cells: float,
    lateral: Sequence[bool] | None = None,
    side_joints: Sequence[tuple[float, float] | None] | None = None,
) -> Targets:
    """Targets for a batch whose maps are ``shape`` (H, W) cells; knees outside are skipped.
    ``lateral`` flags the side views, ``side_joints`` their joints in input pixels (none
    when omitted)."""
    rows, columns = shape
    batch = len(knees)
    heat = torch.zeros(batch, rows, columns)
    centre = torch.zeros(batch, rows, columns)
    offset = torch.zeros(batch, 2, rows, columns)
    handed = torch.zeros(batch, rows, columns)
    handed_mask = torch.zeros(batch, rows, columns)
    view_heat = torch.zeros(batch, rows, columns)
    view_centre = torch.zeros(batch, rows, columns)
    ys = torch.arange(rows, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(columns, dtype=torch.float32)[None, :] + 0.5

    def bump(into: torch.Tensor, cells: torch.Tensor, x: float, y: float) -> tuple[int, int] | None:
        """Add a joint's Gaussian to ``into`` and mark its cell in ``cells``; the cell (row,
        column), or None off the map."""
        cx, cy = (x + 0.5) / stride, (y + 0.5) / stride
        column, row = int(cx // 1), int(cy // 1)
        if not (0 <= column < columns and 0 <= row < rows):
            return None
        gauss = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma_cells**2))
        into.copy_(torch.maximum(into, gauss))
        into[row, column] = cells[row, column] = 1.0
        return row, column

    for index, image_knees in enumerate(knees):
        for knee in image_knees:
            cell = bump(heat[index], centre[index], knee.x, knee.y)
            if cell is None:
                continue
            row, column = cell
            offset[index, 0, row, column] = (knee.x + 0.5) / stride - column
            offset[index, 1, row, column] = (knee.y + 0.5) / stride - row
            near = (slice(max(row - 1, 0), row + 2), slice(max(column - 1, 0), column + 2))
            handed[index][near] = float(knee.right_looking)
            handed_mask[index][near] = 1.0
    for index, joint in enumerate(side_joints or ()):
        if joint is not None:
            bump(view_heat[index], view_centre[index], *joint)
    views = torch.tensor([float(v) for v in lateral] if lateral is not None else [0.0] * batch)
    return Targets(heat, centre, offset, handed, handed_mask, views, view_heat, view_centre)


def decode_peaks(
    maps: torch.Tensor,
    stride: int,
    *,
    threshold: float,
    max_peaks: int = 2,
    min_separation_px: float = 0.0,
) -> list[Peak]:
    """Candidates of one image's raw head output ``maps`` (4, H, W), best first.

    A cell is a peak when its heat is the maximum of its 3x3 neighbourhood (NMS by
    max-pool) and its score ``sigmoid(logit)`` is at least ``threshold``; a peak closer
    than ``min_separation_px`` to a better one is dropped (the same knee twice).
    """
    heat = torch.sigmoid(maps[HEAT].float())
    pooled = F.max_pool2d(heat[None, None], 3, stride=1, padding=1)[0, 0]
    candidates = torch.nonzero((heat == pooled) & (heat >= threshold))
    order = torch.argsort(heat[candidates[:, 0], candidates[:, 1]], descending=True)
    peaks: list[Peak] = []
    for row, column in candidates[order].tolist():
        x = (column + float(maps[OFFSET_X, row, column])) * stride - 0.5
        y = (row + float(maps[OFFSET_Y, row, column])) * stride - 0.5
        if any((x - p.x) ** 2 + (y - p.y) ** 2 < min_separation_px**2 for p in peaks):
            continue
        right = float(torch.sigmoid(maps[HANDED, row, column].float()))
        peaks.append(Peak(x, y, float(heat[row, column]), right))
        if len(peaks) == max_peaks:
            break
    return peaks
