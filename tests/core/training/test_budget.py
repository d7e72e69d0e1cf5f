"""Tests for turning a time budget into the epochs of a fixed schedule (pure arithmetic)."""

from __future__ import annotations

import pytest

from koa_core.errors import TrainingBudgetError
from koa_core.training.budget import StepTimes, epoch_seconds, epochs_for_budget


def test_an_epoch_is_its_training_steps_plus_its_validation_pass() -> None:
    times = StepTimes(train_step_s=0.5, eval_batch_s=0.1)
    # 100 // 32 = 3 full steps; ceil(40 / 32) = 2 validation batches.
    assert epoch_seconds(times, 100, 40, 32) == pytest.approx(3 * 0.5 + 2 * 0.1)


@pytest.mark.parametrize(
    ("budget_s", "epoch_s", "fixed_s", "expected"),
    [
        (600.0, 50.0, 0.0, 10),  # 510 s planned / 50 s
        (600.0, 50.0, 60.0, 9),  # the final evaluation comes first
        (100.0, 80.0, 0.0, 1),  # only one fits
        (10_000.0, 3.0, 0.0, 2_833),
    ],
)
def test_the_most_epochs_that_fit_the_planned_share(
    budget_s: float, epoch_s: float, fixed_s: float, expected: int
) -> None:
    epochs = epochs_for_budget(budget_s, epoch_s, fixed_s, safety=0.85)
    assert epochs == expected
    assert fixed_s + epochs * epoch_s <= 0.85 * budget_s < fixed_s + (epochs + 1) * epoch_s


def test_a_cap_bounds_a_large_budget() -> None:
    assert epochs_for_budget(10_000.0, 1.0, max_epochs=50) == 50


def test_a_budget_without_room_for_one_epoch_is_refused() -> None:
    with pytest.raises(TrainingBudgetError, match="fits no epoch"):
        epochs_for_budget(60.0, 100.0)
    with pytest.raises(ValueError, match="positive"):
        epochs_for_budget(60.0, 0.0)
