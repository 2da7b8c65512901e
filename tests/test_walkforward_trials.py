"""The walk-forward counts its trials in the registry: the DSR's N is the registry's count
for the data set, its Sharpe variance the registry's, and PBO is computed over the
registry's trials; the report states N, PBO and the looks at the test period."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from metatrade.evaluation.protocol import Start, module_params, random_start
from metatrade.evaluation.registry import TrialLog, TrialRegistry, data_hash
from metatrade.evaluation.walkforward import (
    FoldSpec,
    InnerLoopAdapter,
    WalkForwardConfig,
    run_walkforward,
)
from metatrade.evaluation.walkforward.report import save_report
from metatrade.evaluation.walkforward.stats import deflated_sharpe_ratio
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.config import AdaptationConfig
from walkforward_helpers import ar_task, tiny_policy


def _run(tasks, seed: int, log: TrialLog):
    env = TradingEnvConfig(lookback=4, episode_length=16)
    pol = tiny_policy(4, seed=seed)
    starts = {"MAML": Start(pol, module_params(pol)), "random": random_start(pol, seed + 1)}
    adapter = InnerLoopAdapter(env, AdaptationConfig(episodes_per_task=2, inner_lr=1.0), steps=1)
    cfg = WalkForwardConfig(
        folds=FoldSpec(150, 150), env=env, start="validation", bootstrap_samples=50, seed=seed
    )
    return run_walkforward(starts, tasks, adapter, cfg, trials=log)


def test_dsr_counts_every_trial_of_the_registry_and_pbo_reads_them(tmp_path: Path) -> None:
    _, t1 = ar_task(0.4, n_bars=1500, seed=1, name="SynA")
    _, t2 = ar_task(-0.3, n_bars=1500, seed=2, name="SynB")
    reg = TrialRegistry(tmp_path / "trials.sqlite")
    log = TrialLog(reg, run="runs/a", config_hash="cfgA", seed=0)
    pooled_hash = data_hash([t1.arrays, t2.arrays])
    for n_runs, seed in ((1, 0), (2, 3)):
        res = _run([t1, t2], seed, log)
        p = res.pooled.trials
        # 4 policy rows (MAML@k0/k1, random@k0/k1) per run, recorded before DSR reads N
        assert reg.count_trials(pooled_hash) == 4 * n_runs
        assert p["n_trials"] == reg.count_trials(pooled_hash) and p["data_hash"] == pooled_hash
        std = math.sqrt(reg.sharpe_variance(pooled_hash))
        assert p["trial_sharpe_std_daily"] == pytest.approx(std)
        for label in res.labels:
            expected = deflated_sharpe_ratio(
                res.pooled.daily[label].dropna().to_numpy(),
                n_trials=4 * n_runs,
                trial_sharpe_std=std,
            )
            assert res.pooled.metrics[label]["dsr"] == pytest.approx(expected, nan_ok=True)
    # each task scope is a data set of its own, counted apart
    assert reg.count_trials(data_hash([t1.arrays])) == 8
    assert p["split"] == "validation+test"
    assert p["pbo_trials"] == 8 and 0.0 <= p["pbo"] <= 1.0
    recorded = reg.trials(data_hash=pooled_hash)
    assert {t.label for t in recorded} == {"MAML@k0", "MAML@k1", "random@k0", "random@k1"}
    first = recorded[0]
    days = [str(d.date()) for d in res.pooled.daily.index]
    assert sorted(first.returns) == days and first.kind == "walkforward"
    assert first.metrics["n_obs"] == len(days)

    reg.record_look(run="runs/a", data_hash=pooled_hash, split="test", command="x")
    res = _run([t1, t2], 5, log)
    assert res.pooled.trials["test_looks"] == 1
    html = save_report(res, tmp_path / "wf")["html"].read_text()
    assert "N = 12 (12 trial(s) on this data set" in html
    assert "PBO (CSCV" in html and "looks at the test period" in html
    assert "independent blocks" in html
    assert np.isfinite(res.pooled.bootstrap.block)


def test_one_task_is_counted_once(tmp_path: Path) -> None:
    # with one task the pooled scope is that task's data set: its rows are not recorded twice
    _, t1 = ar_task(0.4, n_bars=1500, seed=1, name="SynA")
    reg = TrialRegistry(tmp_path / "trials.sqlite")
    res = _run([t1], 0, TrialLog(reg, run="runs/a", config_hash="cfgA", seed=0))
    assert reg.count_trials(data_hash([t1.arrays])) == 4 == res.pooled.trials["n_trials"]
    assert res.scopes["SynA:5"].trials["n_trials"] == 4
