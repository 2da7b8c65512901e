"""Bootstrap CIs: coverage on known distributions, determinism, ragged tasks, pairing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from metatrade.evaluation.bootstrap import (
    ConfidenceInterval,
    bootstrap_ci,
    hierarchical_bootstrap_ci,
    hierarchical_bootstrap_means,
    pad_groups,
    percentile_interval,
    task_mean,
)


def test_flat_coverage_of_normal_mean() -> None:
    # 300 samples of size 60 from N(2, 3^2): a 95% interval should cover 2 about 95% of the time.
    rng = np.random.default_rng(0)
    hits = 0
    trials = 300
    for _ in range(trials):
        x = rng.normal(2.0, 3.0, size=60)
        hits += bootstrap_ci(x, num_resamples=600, rng=rng).contains(2.0)
    assert 0.90 <= hits / trials <= 0.99


def test_hierarchical_coverage_with_task_effects() -> None:
    # Tasks have their own means (sd 1) and episodes scatter around them (sd 2). The two-stage
    # bootstrap covers the population mean ~95%; resampling episodes only undercovers badly.
    rng = np.random.default_rng(1)
    trials, num_tasks, eps = 200, 20, 10
    hier = flat = 0
    for _ in range(trials):
        mu = rng.normal(0.0, 1.0, size=(num_tasks, 1))
        x = mu + rng.normal(0.0, 2.0, size=(num_tasks, eps))
        hier += hierarchical_bootstrap_ci(x, num_resamples=500, rng=rng).contains(0.0)
        flat += bootstrap_ci(x.ravel(), num_resamples=500, rng=rng).contains(0.0)
    assert 0.88 <= hier / trials <= 0.99
    assert flat / trials < hier / trials - 0.1


def test_matches_scipy_percentile_interval() -> None:
    x = np.random.default_rng(2).exponential(1.0, size=200)
    ours = bootstrap_ci(x, num_resamples=20_000, rng=np.random.default_rng(3))
    ref = stats.bootstrap(
        (x,),
        np.mean,
        method="percentile",
        n_resamples=20_000,
        random_state=np.random.default_rng(4),
    ).confidence_interval
    assert ours.estimate == pytest.approx(x.mean())
    assert ours.low == pytest.approx(ref.low, abs=0.01)
    assert ours.high == pytest.approx(ref.high, abs=0.01)


def test_same_seed_same_interval_and_other_seed_differs() -> None:
    x = np.random.default_rng(5).normal(size=(4, 8))
    a = hierarchical_bootstrap_ci(x, rng=np.random.default_rng(7))
    b = hierarchical_bootstrap_ci(x, rng=np.random.default_rng(7))
    c = hierarchical_bootstrap_ci(x, rng=np.random.default_rng(8))
    assert a == b
    assert a != c
    # the estimate is the plain mean; the bounds are the 2.5 / 97.5 % quantiles of the
    # task-then-episode replicates drawn from the same seed
    assert a.estimate == pytest.approx(x.mean())
    reps = hierarchical_bootstrap_means(x, rng=np.random.default_rng(7))
    assert (a.low, a.high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))


def test_interval_is_widened_to_hold_a_skewed_estimate() -> None:
    # an estimate outside the replicates' quantiles widens the interval to include it
    reps = np.linspace(1.0, 2.0, 101)
    assert percentile_interval(reps, 0.5) == ConfidenceInterval(0.5, 0.5, 1.975, 0.95)
    assert percentile_interval(reps, 1.5).low == pytest.approx(1.025)


def test_ragged_groups_weight_tasks_equally() -> None:
    groups = [np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), np.array([10.0])]
    values, mask = pad_groups(groups)
    assert values.shape == (2, 6) and mask.sum() == 7
    assert task_mean(values, mask) == pytest.approx(5.0)
    ci = hierarchical_bootstrap_ci(groups, rng=np.random.default_rng(0))
    assert ci.estimate == pytest.approx(5.0)
    # Replicates are means of two resampled tasks: only 0, 5 or 10 are possible.
    reps = hierarchical_bootstrap_means(
        values, mask, num_resamples=400, rng=np.random.default_rng(0)
    )
    assert set(np.unique(reps)) <= {0.0, 5.0, 10.0}


def test_constant_values_give_a_point_interval() -> None:
    ci = hierarchical_bootstrap_ci(np.full((3, 5), 1.5), rng=np.random.default_rng(0))
    assert ci == ConfidenceInterval(1.5, 1.5, 1.5, 0.95)


def test_methods_share_resample_indices() -> None:
    # Method 1 = method 0 + 1 everywhere: paired replicates differ by exactly 1.
    base = np.random.default_rng(9).normal(size=(5, 7))
    reps = hierarchical_bootstrap_means(
        np.stack([base, base + 1.0]), num_resamples=300, rng=np.random.default_rng(0)
    )
    assert reps.shape == (2, 300)
    np.testing.assert_allclose(reps[1] - reps[0], 1.0)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, np.nan], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no episodes"):
        hierarchical_bootstrap_ci([np.array([1.0]), np.array([])], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95, rng=np.random.default_rng(0))
