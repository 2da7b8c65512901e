"""Oracle fractions by kind (``metatrade.evaluation.kinds``): ratio of means per kind, the
mean over kinds, noise tasks in absolute return only."""

from __future__ import annotations

import numpy as np
import pytest

from metatrade.data.regimes import TaskRule
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.kinds import kind_summary, kind_table, task_kinds


def test_fractions_by_kind_and_noise_apart() -> None:
    rng = np.random.default_rng(0)
    oracle = np.abs(rng.normal(1.0, 0.3, (6, 40)))
    oracle[4:] = 0.0  # noise tasks: a flat oracle
    returns = oracle.copy()
    returns[:2] *= 0.5  # kind "ar" earns half of its oracle, "seasonal" all of it
    returns[4:] = rng.normal(0.0, 1.0, (2, 40))
    kinds = ["ar", "ar", "seasonal", "seasonal", "noise", "noise"]
    s = kind_summary(returns, oracle, kinds, num_resamples=200)
    assert s.fractions["ar"].estimate == pytest.approx(0.5)
    assert s.fractions["seasonal"].estimate == pytest.approx(1.0)
    assert s.fractions["ar"].low <= 0.5 <= s.fractions["ar"].high
    assert s.mean_fraction == pytest.approx(0.75)
    assert set(s.fractions) == {"ar", "seasonal"}
    assert s.flat_returns["noise"] == pytest.approx(returns[4:].mean())
    table = kind_table({"MAML@k1": returns}, oracle, kinds)
    assert "0.50" in table and "0.75" in table


def test_task_kinds_need_every_rule() -> None:
    rules = {TaskId("Reg000_gap", "5"): TaskRule("gap", 1e-3, {"gap": 5, "follow": 1, "bars": 3})}
    assert task_kinds(["Reg000_gap:5"], rules) == ["gap"]
    with pytest.raises(KeyError, match="Reg001_ar:5"):
        task_kinds(["Reg001_ar:5"], rules)
