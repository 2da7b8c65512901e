"""``evaluation.actions``: sample or mode, one meaning for the protocol's test windows and
backtests, ``run_backtest`` and ``signal``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data.features import build_task_arrays
from metatrade.data.splits import SplitConfig
from metatrade.data.synthetic import RegimeParams, generate_bars, synthetic_instrument
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.backtest import run_backtest
from metatrade.evaluation.protocol import MetaTestProtocol, ProtocolConfig, Start, module_params
from metatrade.market.config import TradingEnvConfig
from metatrade.market.costs import CostModel

ENV = TradingEnvConfig(lookback=4, costs=CostModel(proportional_bps=3.0))


@pytest.fixture(scope="module", params=["orders", "target"])
def setup(request):
    torch.set_num_threads(1)
    task = TaskId("Syn000_p040", "5")
    bars = generate_bars(RegimeParams(0.4, 1e-3), 700, 0)
    instrument = synthetic_instrument(task.instrument)
    arrays = build_task_arrays(task, bars, splits=SplitConfig(), instrument=instrument)
    env = ENV.with_overrides(actions=request.param)
    obs = gym.spaces.Box(-np.inf, np.inf, (4 * arrays.num_features + 4,))
    space = gym.spaces.Discrete(5 if request.param == "orders" else 3)
    pol = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)), obs, space, seed=1
    )  # near-uniform at init
    return arrays, env, pol


def test_backtests_sample_reproducibly_or_take_the_mode(setup) -> None:
    arrays, env, pol = setup
    params = module_params(pol)

    def total(seed):
        return run_backtest((pol, params), arrays, config=env, sample_seed=seed).equity

    mode = total(None)
    np.testing.assert_array_equal(total(5), total(5))  # seeded
    assert not np.array_equal(total(5), total(6))
    assert not np.array_equal(total(5), mode)  # a near-uniform policy: draws are not its mode


def test_the_protocol_trades_test_windows_and_backtests_the_same_way(setup) -> None:
    """``deterministic_test`` (``evaluation.actions: mode``) reaches the backtest column too:
    its backtest is ``run_backtest``'s mode; sampled, it is a seeded path of draws."""
    arrays, env, pol = setup
    cfg = ProtocolConfig(
        adaptation_steps=(0,),
        adaptation_episodes=2,
        test_episodes=3,
        episode_length=24,
        test_episode_length=24,
        env=env,
        bootstrap_samples=50,
        references=(),
    )
    start = {"MAML": Start(pol, module_params(pol))}
    mode = MetaTestProtocol(ProtocolConfig(**{**vars(cfg), "deterministic_test": True}))
    sample = MetaTestProtocol(cfg)
    by_mode, by_sample = mode.run(start, [arrays]), sample.run(start, [arrays])
    report = run_backtest((pol, module_params(pol)), arrays, split="test", config=env)
    assert by_mode.backtests["MAML@k0"][0] == pytest.approx(report.total_return, abs=1e-12)
    assert by_sample.backtests["MAML@k0"][0] != pytest.approx(report.total_return, abs=1e-6)
    again = MetaTestProtocol(cfg).run(start, [arrays])
    np.testing.assert_array_equal(again.backtests["MAML@k0"], by_sample.backtests["MAML@k0"])
    assert not np.array_equal(by_mode.returns["MAML@k0"], by_sample.returns["MAML@k0"])
