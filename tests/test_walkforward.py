"""Walk-forward protocol: fold geometry, causality of adaptation and normalisation,
stitching in both account modes, and `signal` reproducing a fold's first decision."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from metatrade.data.synthetic import synthetic_instrument
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.protocol import Start, module_params
from metatrade.evaluation.walkforward import (
    FoldSpec,
    InnerLoopAdapter,
    WalkForwardConfig,
    WalkForwardTask,
    adaptation_seed,
    fold_arrays,
    make_folds,
    prepare_task,
    run_walkforward,
)
from metatrade.evaluation.walkforward.signal import next_decision
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.config import AdaptationConfig
from walkforward_helpers import ar_task, tiny_policy

LOOKBACK = 4
ENV = TradingEnvConfig(lookback=LOOKBACK, episode_length=16)
SPEC = FoldSpec(fold_bars=90, adapt_bars=120, embargo=0)


def _adapter(steps: int = 1) -> InnerLoopAdapter:
    adaptation = AdaptationConfig(episodes_per_task=4, inner_lr=1.0)
    return InnerLoopAdapter(ENV.with_overrides(episode_length=16), adaptation, steps=steps)


def _config(**kw) -> WalkForwardConfig:
    base = {"folds": SPEC, "env": ENV, "start": 700, "bootstrap_samples": 50}
    return WalkForwardConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def setup():
    bars, task = ar_task(0.4, n_bars=1300)
    policy = tiny_policy(LOOKBACK)
    return bars, task, {"MAML": Start(policy, module_params(policy))}


def test_folds_tile_the_record_and_never_touch_their_adaptation_window(setup) -> None:
    _, task, _ = setup
    spec = FoldSpec(fold_bars=90, adapt_bars=120, embargo=7)
    folds = make_folds(task.arrays, spec, 700, lookback=LOOKBACK)
    assert folds[0].trade[0] == 700 and folds[-1].trade[1] == len(task) - 1
    for prev, fold in zip(folds, folds[1:], strict=False):
        assert prev.trade[1] == fold.trade[0]  # contiguous, disjoint decision rows
    for fold in folds:
        lo, hi = fold.adapt
        assert hi - lo == 120 and hi == fold.trade[0] - 7  # the embargo gap
        assert fold.norm[1] == hi  # statistics end where the window ends


def _perturbed(task: WalkForwardTask, cut: int) -> WalkForwardTask:
    """Bars and raw features from row ``cut`` on replaced by noise."""
    rng = np.random.default_rng(5)
    a = task.arrays
    noisy = {k: getattr(a, k).copy() for k in ("open", "high", "low", "close")}
    for v in noisy.values():
        v[cut:] *= np.exp(rng.normal(0, 0.01, len(v) - cut))
    raw = task.raw.copy()
    raw[cut:] += rng.normal(0, 1, raw[cut:].shape)
    return WalkForwardTask(replace(a, **noisy), raw)


@pytest.mark.parametrize("embargo", [0, 5])
def test_adaptation_and_normalisation_ignore_the_fold_and_the_embargo(setup, embargo) -> None:
    _, task, starts = setup
    spec = FoldSpec(fold_bars=90, adapt_bars=120, embargo=embargo)
    fold = make_folds(task.arrays, spec, 700, lookback=LOOKBACK)[1]
    adapter = _adapter()

    def adapted(t: WalkForwardTask) -> dict:
        seed = adaptation_seed(0, "MAML", str(t.task), fold.trade[0])
        return adapter(starts["MAML"], fold_arrays(t, fold, spec), fold.adapt, seed=seed)[0]

    ref = adapted(task)
    same = adapted(_perturbed(task, fold.trade[0] - embargo))  # fold + embargo changed
    moved = adapted(_perturbed(task, fold.adapt[1] - 1))  # the window's last bar changed
    assert all(torch.equal(ref[k], same[k]) for k in ref)
    assert not all(torch.equal(ref[k], moved[k]) for k in ref)
    feats = fold_arrays(task, fold, spec).features
    feats_future = fold_arrays(_perturbed(task, fold.trade[0] - embargo), fold, spec).features
    np.testing.assert_array_equal(
        feats[: fold.trade[0] - embargo], feats_future[: fold.trade[0] - embargo]
    )


@pytest.mark.parametrize("carry", [True, False])
def test_stitched_equity_is_the_product_or_the_sum_of_the_folds(setup, carry) -> None:
    _, task, starts = setup
    res = run_walkforward(starts, [task], _adapter(), _config(carry=carry))
    rec = res.tasks[0]
    c0 = ENV.initial_capital
    first = rec.folds[0].trade[0]
    for r in rec.records.values():
        if carry:
            assert r.equity[-1] == pytest.approx(c0 * np.prod(1 + r.fold_returns), rel=1e-12)
        else:
            assert r.equity[-1] == pytest.approx(c0 + r.fold_pnl.sum(), rel=1e-12)
            spans = [
                (rec.timestamps[f.trade[0] - first], rec.timestamps[f.trade[1] - first])
                for f in rec.folds
            ]
            for t in r.trades:  # flatten: every round trip lies inside one fold
                assert any(s < t.entry_time and t.exit_time <= e for s, e in spans)
        for f, fold in enumerate(rec.folds):  # per-fold returns read off the stitched curve
            a, b = fold.trade[0] - first, fold.trade[1] - first
            if carry:
                assert r.fold_returns[f] == pytest.approx(r.equity[b] / r.equity[a] - 1, abs=1e-12)
            else:
                assert r.fold_pnl[f] == pytest.approx(r.equity[b] - r.equity[a], abs=1e-6)
    assert rec.records["flat"].equity[-1] == c0
    m = res.pooled.metrics["MAML@k1"]
    assert m["total_return"] == pytest.approx(rec.records["MAML@k1"].equity[-1] / c0 - 1)


def test_signal_on_a_file_cut_at_a_fold_gives_that_folds_decision(setup) -> None:
    bars, task, starts = setup
    res = run_walkforward(starts, [task], _adapter(), _config(carry=False))
    rec = res.tasks[0]
    warmup = len(bars) - len(task)
    for f in (1, 3):
        row = rec.folds[f].trade[0]
        cut = prepare_task(
            TaskId("Syn0", "5"),
            bars.iloc[: warmup + row + 1],
            instrument=synthetic_instrument("Syn0"),
        )
        assert len(cut) == row + 1
        sig = next_decision(
            cut, "MAML", starts["MAML"], _adapter(), SPEC, lookback=LOOKBACK, seed=0
        )
        wf = rec.records["MAML@k1"]
        assert sig.decision_row == row and sig.adapt_rows == rec.folds[f].adapt
        assert sig.action == wf.first_action[f]
        np.testing.assert_allclose(list(sig.probabilities.values()), wf.first_probs[f], atol=1e-6)


def test_exact_adapter_adapts_on_the_window_only_and_plugs_into_the_protocol() -> None:
    """The exact estimator behind the Adapter protocol: k steps of the expected-P&L gradient
    on the latest windows of the adaptation rows; bars after the window change nothing, and
    the walk-forward run trades the adapted policy in the ledger."""
    import gymnasium as gym

    from metatrade.agents.policies import NetworkConfig, make_policy
    from metatrade.evaluation.walkforward import InnerLoopAdapter
    from metatrade.exact.settings import ObjectiveSettings
    from walkforward_helpers import N_FEATURES

    env = TradingEnvConfig(lookback=LOOKBACK, episode_length=16, observation="position")
    _, task = ar_task(0.4, n_bars=1300)
    space = gym.spaces.Box(-np.inf, np.inf, (LOOKBACK * N_FEATURES + 1,))  # window + position
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)), space, gym.spaces.Discrete(5), seed=0
    )
    start = Start(policy, module_params(policy))
    adaptation = AdaptationConfig(estimator="exact", episodes_per_task=3, inner_lr=5.0)
    adapter = InnerLoopAdapter(env, adaptation, ObjectiveSettings(vol_bars=64), steps=2)
    rows = (560, 700)
    steps = adapter(start, task.arrays, rows, seed=0)
    assert len(steps) == 2
    assert any(not torch.equal(steps[0][k], start.params[k]) for k in start.params)
    later = adapter(start, _perturbed(task, 700).arrays, rows, seed=1)  # the future changes
    for a, b in zip(steps, later, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)  # no sampling, no look-ahead
    res = run_walkforward({"MAML": start}, [task], adapter, _config(env=env))
    record = res.tasks[0].records["MAML@k2"]
    assert np.isfinite(record.equity).all() and len(record.fold_returns) == len(res.tasks[0].folds)
