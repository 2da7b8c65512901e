"""On a task whose AR(1) coefficient flips sign every few sessions, re-adapting before each
fold (a real policy-gradient step, ``InnerLoopAdapter``) tracks the regime; the frozen start
does not."""

from __future__ import annotations

import numpy as np

from metatrade.data.synthetic import synthetic_instrument
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.protocol import Start, module_params
from metatrade.evaluation.walkforward import (
    FoldSpec,
    InnerLoopAdapter,
    WalkForwardConfig,
    adaptation_seed,
    fold_arrays,
    prepare_task,
    run_walkforward,
)
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.config import AdaptationConfig
from walkforward_helpers import SignPolicy, regime_switch_bars

LOOKBACK = 2
PERIOD = 4  # sessions per regime


def test_walk_forward_readaptation_tracks_a_sign_flip_the_frozen_start_misses() -> None:
    bars = regime_switch_bars(n_sessions=22, period=PERIOD, seed=1)
    task = prepare_task(TaskId("Switch", "5"), bars, instrument=synthetic_instrument("Switch"))
    warmup = len(bars) - len(task)
    env = TradingEnvConfig(lookback=LOOKBACK, episode_length=24)
    policy = SignPolicy(LOOKBACK, theta=1.0)  # a momentum start
    starts = {"MAML": Start(policy, module_params(policy))}
    adaptation = AdaptationConfig(episodes_per_task=16, inner_lr=20.0, gamma=0.5, gae_lambda=0.5)
    adapter = InnerLoopAdapter(env.with_overrides(episode_length=24), adaptation, steps=1)
    spec = FoldSpec(fold_bars=1, adapt_bars=1, unit="days")  # adapt on yesterday, trade today
    start = 75 * PERIOD - warmup  # first decision: the first bar of the first -phi session
    cfg = WalkForwardConfig(folds=spec, env=env, start=start, carry=False, bootstrap_samples=50)
    res = run_walkforward(starts, [task], adapter, cfg)
    rec = res.tasks[0]

    def regime(row: int) -> float:  # sign of phi at a task row
        return 1.0 if ((row + warmup) // (75 * PERIOD)) % 2 == 0 else -1.0

    agree, tracked, frozen = [], [], []
    for f, fold in enumerate(rec.folds[:-1]):
        lo, hi = fold.adapt
        seed = adaptation_seed(0, "MAML", "Switch:5", fold.trade[0])
        theta = adapter(starts["MAML"], fold_arrays(task, fold, spec), fold.adapt, seed=seed)[0]
        if regime(lo) == regime(hi - 1) == regime(fold.trade[0]):  # no switch in between
            agree.append(np.sign(theta["theta"].item()) == regime(lo))
            tracked.append(rec.records["MAML@k1"].fold_returns[f])
            frozen.append((regime(lo), rec.records["MAML@k0"].fold_returns[f]))
    assert (
        len(agree) >= 10 and np.mean(agree) >= 0.75
    )  # theta follows the regime sign (chance: 0.5)
    assert np.mean(tracked) > 0  # re-adapted: earns in both regimes
    neg = [r for s, r in frozen if s < 0]
    assert len(neg) >= 4 and np.mean(neg) < 0  # frozen momentum loses when phi < 0
    m = res.pooled.metrics
    assert m["MAML@k1"]["total_return"] > m["MAML@k0"]["total_return"]
