"""Heatmap targets and their decoding: peaks, NMS by max-pool, offsets, handedness, view."""

from __future__ import annotations

import pytest
import torch

from koa_core.localize.heatmap import KneeTarget, decode_peaks, encode_targets
from koa_core.localize.loss import localizer_loss
from koa_core.localize.network import HANDED, HEAT, OFFSET_X, OFFSET_Y, VIEW

STRIDE = 4


def _maps(rows: int = 20, columns: int = 30) -> torch.Tensor:
    maps = torch.zeros(4, rows, columns)
    maps[HEAT] = -10.0
    return maps


def _peak(maps: torch.Tensor, row: int, column: int, logit: float, handed: float = 0.0) -> None:
    maps[HEAT, row, column] = logit
    maps[HANDED, row, column] = handed


def test_a_peak_decodes_to_its_cell_plus_offset_in_input_pixels() -> None:
    maps = _maps()
    _peak(maps, 5, 7, 3.0, handed=4.0)
    maps[OFFSET_X, 5, 7], maps[OFFSET_Y, 5, 7] = 0.25, 0.75
    (peak,) = decode_peaks(maps, STRIDE, threshold=0.1)
    assert peak.x == pytest.approx((7 + 0.25) * STRIDE - 0.5)
    assert peak.y == pytest.approx((5 + 0.75) * STRIDE - 0.5)
    assert peak.score == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert peak.p_right_looking == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())


def test_max_pool_keeps_only_the_local_maximum_of_a_blob() -> None:
    maps = _maps()
    maps[HEAT, 9:12, 9:12] = 1.0
    maps[HEAT, 10, 10] = 2.0
    peaks = decode_peaks(maps, STRIDE, threshold=0.1, max_peaks=5)
    assert len(peaks) == 1
    assert peaks[0].x == pytest.approx(10 * STRIDE - 0.5)


def test_two_knees_come_best_first_and_at_most_max_peaks() -> None:
    maps = _maps()
    _peak(maps, 5, 5, 1.0)
    _peak(maps, 5, 25, 3.0)
    _peak(maps, 15, 15, 2.0)
    peaks = decode_peaks(maps, STRIDE, threshold=0.1, max_peaks=2)
    assert [round(p.x) for p in peaks] == [round(25 * STRIDE - 0.5), round(15 * STRIDE - 0.5)]
    assert peaks[0].score > peaks[1].score


def test_peaks_below_the_threshold_are_not_candidates() -> None:
    maps = _maps()
    _peak(maps, 5, 5, -3.0)  # sigmoid ~ 0.047
    assert decode_peaks(maps, STRIDE, threshold=0.1) == []
    assert len(decode_peaks(maps, STRIDE, threshold=0.01)) == 1


def test_a_second_peak_close_to_a_better_one_is_the_same_knee() -> None:
    maps = _maps()
    _peak(maps, 5, 5, 3.0)
    _peak(maps, 5, 8, 2.0)  # 3 cells = 12 px away: not adjacent, so max-pool keeps both
    assert len(decode_peaks(maps, STRIDE, threshold=0.1)) == 2
    assert len(decode_peaks(maps, STRIDE, threshold=0.1, min_separation_px=20.0)) == 1


def test_blank_maps_decode_to_no_knee() -> None:
    assert decode_peaks(_maps(), STRIDE, threshold=0.1) == []


@pytest.mark.parametrize("right_looking", [True, False])
def test_encoded_targets_decode_back_to_the_knee(right_looking: bool) -> None:
    knee = KneeTarget(x=41.3, y=22.8, right_looking=right_looking)
    targets = encode_targets([[knee]], (16, 24), STRIDE, sigma_cells=1.0)
    maps = _maps(16, 24)
    # Ideal network output: the heat target as logits, offsets and handedness as targets.
    maps[HEAT] = torch.logit(targets.heat[0].clamp(1e-4, 1 - 1e-4))
    maps[OFFSET_X], maps[OFFSET_Y] = targets.offset[0]
    maps[HANDED] = torch.where(targets.handed[0] > 0.5, 5.0, -5.0)
    (peak,) = decode_peaks(maps, STRIDE, threshold=0.5)
    assert peak.x == pytest.approx(knee.x, abs=1e-4)
    assert peak.y == pytest.approx(knee.y, abs=1e-4)
    assert (peak.p_right_looking > 0.5) == right_looking
    assert targets.centre.sum() == 1
    assert targets.handed_mask.sum() == 9


def test_knees_off_the_map_get_no_target() -> None:
    targets = encode_targets([[KneeTarget(500.0, 10.0, True)], []], (8, 8), STRIDE, 1.0)
    assert targets.centre.sum() == 0
    assert targets.heat.max() == 0


def test_a_side_view_joint_is_a_second_heat_class_and_frontal_films_are_its_negatives() -> None:
    targets = encode_targets(
        [[], [], [KneeTarget(20.0, 20.0, True)]],
        (8, 8),
        STRIDE,
        1.0,
        lateral=[True, True, False],
        side_joints=[(13.5, 9.5), None, None],
    )
    assert targets.lateral.tolist() == [1.0, 1.0, 0.0]
    assert targets.view_centre[0, 2, 3] == 1 and targets.view_centre.sum() == 1
    assert targets.centre[2].sum() == 1 and targets.view_heat[2].max() == 0
    maps = torch.zeros(3, VIEW + 1, 8, 8)
    maps[:, HEAT] = -10.0
    maps[:, VIEW] = -8.0
    maps[0, VIEW, 2, 3] = 8.0  # the side-view joint where it is
    maps[1, VIEW, 5, 5] = 8.0  # the unlocated side view: anywhere will do
    _, right = localizer_loss(maps, targets)
    wrong = maps.clone()
    wrong[2, VIEW, 5, 5] = 8.0  # a side-view joint on the frontal film costs
    _, on_frontal = localizer_loss(wrong, targets)
    missing = maps.clone()
    missing[1, VIEW] = -8.0  # the unlocated side view with no cell saying so costs
    _, unnamed = localizer_loss(missing, targets)
    assert right["view"] < 0.05
    assert on_frontal["view"] > 1.0 and unnamed["view"] > 1.0
    _, no_head = localizer_loss(maps[:, :VIEW], targets)
    assert "view" not in no_head
