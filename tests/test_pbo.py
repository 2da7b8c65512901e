"""PBO by CSCV (Bailey, Borwein, Lopez de Prado & Zhu 2017): near 1 on a matrix built to
overfit, near 0 with a real edge, and equal to a literal loop over the paper's steps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as st

from metatrade.evaluation.pbo import choose_partitions, pbo, pbo_of_trials, trial_matrix
from metatrade.evaluation.registry import Trial


def _literal_pbo(m: np.ndarray, s: int) -> tuple[float, list[float]]:
    """The paper's steps one combination at a time (as its reference code does)."""
    t, n = m.shape
    m = m[t % s :]
    blocks = np.split(m, s)
    logits = []
    for c in itertools.combinations(range(s), s // 2):
        j = np.concatenate([blocks[i] for i in c])
        jbar = np.concatenate([blocks[i] for i in range(s) if i not in c])
        r = j.mean(0) / j.std(0, ddof=1)
        rbar = jbar.mean(0) / jbar.std(0, ddof=1)
        star = int(np.argmax(r))
        w = st.rankdata(rbar)[star] / (n + 1)
        logits.append(float(np.log(w / (1 - w))))
    return float(np.mean(np.array(logits) <= 0)), logits


def test_pbo_matches_a_literal_loop_over_the_papers_steps() -> None:
    m = np.random.default_rng(0).normal(0.0, 1.0, (203, 7))  # 203 % 6 = 5 rows dropped
    res = pbo(m, partitions=6)
    ref, logits = _literal_pbo(m, 6)
    assert res.pbo == pytest.approx(ref)
    np.testing.assert_allclose(res.logits, logits, rtol=1e-9, atol=1e-12)
    assert len(res.logits) == 20 and res.periods == 203 and res.trials == 7


def test_pbo_is_near_one_on_a_matrix_built_to_overfit() -> None:
    # 100 noise trials, each demeaned over the whole sample: whatever is lucky in sample
    # is repaid out of sample, so the in-sample best is the out-of-sample loser.
    rng = np.random.default_rng(1)
    m = rng.normal(0.0, 0.01, (480, 100))
    m -= m.mean(0)
    res = pbo(m, partitions=16)
    assert res.pbo > 0.95
    assert res.slope < 0 and res.prob_oos_loss > 0.95  # performance degrades


def test_pbo_is_near_zero_with_a_real_edge() -> None:
    rng = np.random.default_rng(2)
    m = rng.normal(0.0, 0.01, (480, 100))
    m[:, 17] += 0.004  # one trial with a positive drift (per-period Sharpe 0.4)
    res = pbo(m, partitions=16)
    assert res.pbo < 0.05
    assert res.prob_oos_loss < 0.05


def test_pure_noise_sits_near_one_half() -> None:
    res = pbo(np.random.default_rng(3).normal(0.0, 1.0, (320, 40)), partitions=8)
    assert 0.2 < res.pbo < 0.8


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="N >= 2 trials"):
        pbo(np.zeros((10, 1)))
    with pytest.raises(ValueError, match="partitions=3"):
        pbo(np.ones((10, 2)), partitions=3)
    assert choose_partitions(40) == 16 and choose_partitions(13) == 6
    assert choose_partitions(3) == 0


def _trial(i: int, returns: dict[str, float] | None) -> Trial:
    return Trial(
        i,
        "t",
        "walkforward",
        "run",
        "c",
        "d",
        "validation",
        0,
        f"r{i}",
        {"sharpe": 0.0, "n_obs": 1, "mean_return": 0.0},
        returns,
    )


def test_registry_trials_align_on_common_periods() -> None:
    a = _trial(1, {"2024-01-02": 0.01, "2024-01-03": -0.02, "2024-01-04": 0.0})
    b = _trial(2, {"2024-01-03": 0.03, "2024-01-04": 0.01})
    periods, m, used = trial_matrix([a, b, _trial(3, None)])
    assert periods == ["2024-01-03", "2024-01-04"] and [t.id for t in used] == [1, 2]
    np.testing.assert_array_equal(m, [[-0.02, 0.03], [0.0, 0.01]])
    assert np.isnan(pbo_of_trials([a, b])["pbo"])  # two common periods: too few
