"""The meta-test protocol end to end on two tiny synthetic tasks."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data.features import build_task_arrays
from metatrade.data.splits import SplitConfig
from metatrade.data.synthetic import RegimeParams, generate_bars, synthetic_instrument
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.protocol import (
    MetaTestProtocol,
    ProtocolConfig,
    Start,
    module_params,
    random_start,
)
from metatrade.market.config import TradingEnvConfig

REGIMES = {
    TaskId("Syn000_p040", "5"): RegimeParams(0.4, 1e-3),
    TaskId("Syn001_m040", "5"): RegimeParams(-0.4, 1e-3),
}


@pytest.fixture(scope="module")
def result():
    torch.set_num_threads(1)
    arrays = [
        build_task_arrays(
            t,
            generate_bars(p, 700, i),
            splits=SplitConfig(),
            instrument=synthetic_instrument(t.instrument),
        )
        for i, (t, p) in enumerate(REGIMES.items())
    ]
    obs = gym.spaces.Box(-np.inf, np.inf, (4 * arrays[0].num_features + 4,))
    act = gym.spaces.Discrete(5)
    pol = make_policy(NetworkConfig(kind="mlp", hidden_sizes=(8,)), obs, act, seed=1)
    other = make_policy(NetworkConfig(kind="mlp", hidden_sizes=(8,)), obs, act, seed=2)
    starts = {
        "MAML": Start(pol, module_params(pol)),
        "PPO": Start(other, module_params(other)),
        "random": random_start(pol, seed=3),
    }
    cfg = ProtocolConfig(
        adaptation_episodes=2,
        test_episodes=3,
        episode_length=24,
        test_episode_length=24,
        env=TradingEnvConfig(lookback=4),
        oracle=REGIMES,
        bootstrap_samples=200,
    )
    before = {k: v.clone() for k, v in starts["MAML"].params.items()}
    res = MetaTestProtocol(cfg).run(starts, arrays)
    for k, v in before.items():  # adaptation never touches the starting parameters
        assert torch.equal(v, starts["MAML"].params[k])
    return res


def test_rows_and_cis(result) -> None:
    keys = [(r.method, r.k) for r in result.rows]
    expected = [(m, k) for m in ("MAML", "PPO", "random") for k in (0, 1, 2, 3)]
    assert keys == expected + [("buy-and-hold", None), ("flat", None)]
    oracle_mean = result.oracle_returns.mean(axis=1).mean()
    for r in result.rows:
        label = r.method if r.k is None else f"{r.method}@k{r.k}"
        mean = result.returns[label].mean(axis=1).mean()  # mean over tasks of task means
        assert r.mean_return.estimate == pytest.approx(mean)
        assert r.oracle_fraction is not None
        assert r.oracle_fraction.estimate == pytest.approx(mean / oracle_mean)
        low, high = np.quantile(result.replicates[f"return:{label}"], [0.025, 0.975])
        assert r.mean_return.low == pytest.approx(min(low, mean))
        assert r.mean_return.high == pytest.approx(max(high, mean))
        assert r.backtest_return == pytest.approx(result.backtests[label].mean())
    flat = result.row("flat")
    assert flat.mean_return.estimate == 0.0 and flat.backtest_return == 0.0
    assert result.returns["MAML@k0"].shape == (2, 3)
    # Adapted parameters carry the task axis and differ from k=0 after a step.
    p0, p1 = result.adapted[("MAML", 0)], result.adapted[("MAML", 1)]
    assert all(v.shape[0] == 2 for v in p1.values())
    assert any(not torch.equal(p0[n], p1[n]) for n in p0)


def test_outputs(result, tmp_path) -> None:
    files = result.save(tmp_path)
    table = pd.read_csv(files["csv"])
    assert len(table) == 14 and {"return_ci_low", "oracle_fraction"} <= set(table.columns)
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    assert doc["tasks"] == ["Syn000_p040:5", "Syn001_m040:5"] and len(doc["rows"]) == 14
    text = (tmp_path / "evaluation.txt").read_text()
    assert "buy-and-hold" in text and "fraction of oracle" in text
    # two tasks on the same days, 3 windows each: the day bootstrap has few blocks and says so
    plan = result.bootstrap
    assert plan.days <= 6 and plan.warning and "independent blocks" in " ".join(text.split())
    assert doc["bootstrap"]["days"] == plan.days
    png = (tmp_path / "evaluation_adaptation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    diff = result.difference("MAML@k1", "PPO@k1")
    assert diff.estimate == pytest.approx(
        result.returns["MAML@k1"].mean() - result.returns["PPO@k1"].mean()
    )  # equal episodes per task: the task-mean is the plain mean
    paired = result.replicates["return:MAML@k1"] - result.replicates["return:PPO@k1"]
    low, high = np.quantile(paired, [0.025, 0.975])
    assert (diff.low, diff.high) == pytest.approx(
        (min(low, diff.estimate), max(high, diff.estimate))
    )


def test_bad_config_is_named() -> None:
    with pytest.raises(ValueError, match="adaptation_steps"):
        ProtocolConfig(adaptation_steps=(-1,))
    with pytest.raises(ValueError, match="references"):
        ProtocolConfig(references=("oracle",))
