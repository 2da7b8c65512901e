"""Pooling a figure over training seeds: the per-seed values, their spread, and a pooled
interval that widens with the seed-to-seed variation."""

from __future__ import annotations

import numpy as np
import pytest

from metatrade.evaluation.bootstrap import ConfidenceInterval
from metatrade.evaluation.protocol_result import EvaluationResult, EvaluationRow
from metatrade.evaluation.seeds import pool_evaluations, pool_seeds


def _replicates(center: float, rng: np.random.Generator, sd: float = 0.01) -> np.ndarray:
    return center + sd * rng.standard_normal(2000)


def test_pooled_figure_is_the_mean_over_seeds_and_the_spread_their_sd() -> None:
    rng = np.random.default_rng(0)
    est = {0: 0.10, 1: 0.40, 2: 0.25}
    pool = pool_seeds(est, {s: _replicates(v, rng) for s, v in est.items()}, rng=rng)
    assert pool.pooled.estimate == pytest.approx(0.25)
    assert pool.spread == pytest.approx(np.std([0.10, 0.40, 0.25], ddof=1))
    assert pool.per_seed == est and pool.seeds == [0, 1, 2]
    assert pool.as_dict()["min"] == 0.10 and pool.as_dict()["max"] == 0.40


def test_seed_variation_widens_the_pooled_interval() -> None:
    rng = np.random.default_rng(1)
    far = {0: 0.0, 1: 0.3, 2: 0.6}
    near = {0: 0.3, 1: 0.3, 2: 0.3}
    wide = pool_seeds(far, {s: _replicates(v, rng) for s, v in far.items()}, rng=rng)
    tight = pool_seeds(near, {s: _replicates(v, rng) for s, v in near.items()}, rng=rng)
    # each seed alone is +-0.02; seeds 0.3 apart make the mean over seeds far less sure
    assert wide.pooled.half_width > 5 * tight.pooled.half_width
    assert wide.pooled.low < 0.2 and wide.pooled.high > 0.4
    assert tight.pooled.contains(0.3) and tight.pooled.half_width < 0.02


def test_one_seed_is_its_own_interval_and_mismatched_seeds_are_named() -> None:
    rng = np.random.default_rng(2)
    reps = _replicates(0.2, rng)
    pool = pool_seeds({7: 0.2}, {7: reps}, rng=rng)
    assert pool.spread == 0.0
    assert (pool.pooled.low, pool.pooled.high) == pytest.approx(
        tuple(np.quantile(reps, [0.025, 0.975]))
    )
    with pytest.raises(ValueError, match="same, non-empty set of seeds"):
        pool_seeds({0: 0.1}, {1: reps}, rng=rng)


def test_protocol_rows_pool_over_seeds() -> None:
    rng = np.random.default_rng(3)
    results = {}
    for seed, center in ((0, 0.01), (1, 0.03)):
        reps = _replicates(center, rng, sd=0.001)
        rows = [
            EvaluationRow("MAML", 1, ConfidenceInterval(center, center - 0.002, center + 0.002)),
            EvaluationRow("flat", None, ConfidenceInterval(0.0, 0.0, 0.0)),
        ]
        results[seed] = EvaluationResult(
            tasks=["A:5"],
            rows=rows,
            returns={},
            backtests={},
            oracle_returns=None,
            adapted={},
            config={"confidence": 0.9},
            replicates={
                "return:MAML@k1": reps,
                "return:flat": np.zeros(2000),
                "fraction:MAML@k1": reps,
            },
        )
    pooled = pool_evaluations(results, rng=rng)
    assert set(pooled) == {"MAML@k1", "flat"}
    assert pooled["MAML@k1"].per_seed == {0: 0.01, 1: 0.03}
    assert pooled["MAML@k1"].pooled.estimate == pytest.approx(0.02)
    assert pooled["MAML@k1"].pooled.confidence == 0.9
    assert pooled["flat"].pooled.half_width == 0.0
