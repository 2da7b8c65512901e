"""Agents on the real trading env: PPO with MLP and GRU policies on a BatchTradingEnv over
synthetic bars run through the data layer's feature pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metatrade.agents import PPOAgent, PPOConfig
from metatrade.data import SplitConfig, TaskArrays, TaskId, build_task_arrays
from metatrade.data.synthetic import RegimeParams, generate_bars, synthetic_instrument
from metatrade.market.batch_env import BatchTradingEnv


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only spin on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tasks() -> list[TaskArrays]:
    out = []
    for i, phi in enumerate((0.3, -0.2)):
        bars = generate_bars(RegimeParams(phi=phi), 1000, i)
        out.append(
            build_task_arrays(
                TaskId(f"Syn{i:03d}", "5"),
                bars,
                splits=SplitConfig(),
                instrument=synthetic_instrument(f"Syn{i:03d}"),
            )
        )
    return out


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_ppo_trains_on_batch_trading_env(
    tasks: list[TaskArrays], kind: str, tmp_path: Path
) -> None:
    env = BatchTradingEnv(tasks, 3, lookback=6, episode_length=32, seed=0)
    config = PPOConfig(n_steps=16, kind=kind, hidden_sizes=(16,), reward_scale=100.0)
    agent = PPOAgent.from_env(env, config)
    assert agent.window_shape == env.window_shape and agent.account_dim == env.account_dim
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    agent.learn(env, 2 * 16 * 6)
    assert agent.num_timesteps == 2 * 16 * 6
    logs = agent.logs[-1]
    assert all(np.isfinite(logs[k]) for k in ("train/policy_loss", "train/value_loss"))
    assert any(not torch.equal(v, before[k]) for k, v in agent.policy.state_dict().items())

    obs = env.reset(seed=1)
    actions = agent.select_action(obs)
    assert actions.shape == (2, 3) and actions.dtype == np.int64
    assert ((actions >= 0) & (actions < 5)).all()

    agent.save_model(tmp_path / "ppo.pt")
    loaded = PPOAgent.load_model(tmp_path / "ppo.pt", env=env)
    np.testing.assert_array_equal(
        loaded.select_action(obs, deterministic=True), agent.select_action(obs, deterministic=True)
    )
