"""The names and the one P(KOA) every part of koa shares."""

from __future__ import annotations

import numpy as np
import pytest

from koa_core.schema import CLASS_NAMES, GRADES, PROBABILITY_COLUMNS, p_koa


def test_p_koa_is_the_sum_of_kl2_to_kl4() -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=16)
    assert p_koa(probs) == pytest.approx(probs[:, 2] + probs[:, 3] + probs[:, 4])
    assert p_koa(probs) == pytest.approx(1 - probs[:, 0] - probs[:, 1], abs=1e-12)


def test_p_koa_stays_a_probability_despite_float_rounding() -> None:
    rounded_up = np.array([[0.0, 0.0, 0.5, 0.3, 0.2000001]], dtype=np.float32)
    assert p_koa(rounded_up)[0] == 1.0


def test_one_column_and_class_name_per_grade() -> None:
    assert len(GRADES) == len(CLASS_NAMES) == len(PROBABILITY_COLUMNS) == 5
    assert PROBABILITY_COLUMNS[3] == "p_kl3" and CLASS_NAMES[3] == "KL3"
