"""Mixture-of-experts agent: regime labels from causal features, the regime report, PPO training
and checkpoints, on synthetic bars through the data layer's feature pipeline."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from metatrade.agents import MoEAgent, PPOConfig, flat_observations, regime_labels, regime_report
from metatrade.agents.moe_agent import REGIMES
from metatrade.data import SplitConfig, TaskArrays, TaskId, build_task_arrays
from metatrade.data.synthetic import RegimeParams, generate_bars, synthetic_instrument
from metatrade.market import TradingEnv

LOOKBACK = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only spin on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task() -> TaskArrays:
    bars = generate_bars(RegimeParams(phi=0.3, sigma=1e-3), 1200, 0)
    return build_task_arrays(
        TaskId("Syn000_p030", "5"),
        bars,
        splits=SplitConfig(),
        instrument=synthetic_instrument("Syn000_p030"),
    )


def test_regime_labels_follow_the_median_rule(task: TaskArrays) -> None:
    labels = regime_labels(task.features, task.feature_names)
    names = list(task.feature_names)
    trend = np.abs(task.features[:, names.index("logret_24")])
    vol = task.features[:, names.index("rvol_48")]
    is_trend = trend > np.median(trend)
    is_high = vol > np.median(vol)
    for i in (0, 17, 400, len(labels) - 1):
        expected = (
            f"{'trend' if is_trend[i] else 'range'}/{'high_vol' if is_high[i] else 'low_vol'}"
        )
        assert labels[i] == expected
    assert set(labels) == set(REGIMES)
    # Median splits: half the rows are "trend", half "high_vol" (up to ties).
    assert abs(np.char.startswith(labels.astype(str), "trend").mean() - 0.5) < 0.01
    with pytest.raises(ValueError, match="'adx_99' is not among"):
        regime_labels(task.features, task.feature_names, trend_feature="adx_99")


def test_flat_observations_match_trading_env(task: TaskArrays) -> None:
    env = TradingEnv(task, lookback=LOOKBACK, episode_length=16)
    rows = np.array([100, 250])
    obs = flat_observations(task.features, rows, LOOKBACK, env.account_dim)
    for row, o in zip(rows, obs, strict=True):
        env_obs, _ = env.reset(options={"start": int(row)})
        np.testing.assert_array_equal(o, env_obs)
    with pytest.raises(ValueError, match="lookback-1=7"):
        flat_observations(task.features, np.array([3]), LOOKBACK, 4)


def test_regime_report_counts_leaders(task: TaskArrays) -> None:
    env = TradingEnv(task, lookback=LOOKBACK, episode_length=16)
    agent = MoEAgent(
        env.observation_space,
        env.action_space,
        PPOConfig(num_experts=3, hidden_sizes=(16,), seed=2),
        window_shape=env.window_shape,
        account_dim=env.account_dim,
    )
    assert agent.config.kind == "moe"
    rows = np.arange(LOOKBACK - 1, len(task))
    obs = flat_observations(task.features, rows, LOOKBACK, env.account_dim)
    labels = regime_labels(task.features[rows], task.feature_names)
    # Make the gate depend strongly on the input so different experts lead on different rows.
    with torch.no_grad():
        agent.policy.gate.out.weight.mul_(300.0)
    report = agent.regime_report(obs, labels)

    gates = agent.gate_weights(obs)
    leader = gates.argmax(-1)
    assert list(report.index) == [*REGIMES, "all"]
    assert report.loc["all", "n"] == len(rows)
    assert report.loc[list(REGIMES), "n"].sum() == len(rows)
    lead_cols = [f"lead_{k}" for k in range(3)]
    np.testing.assert_allclose(report[lead_cols].sum(axis=1), 1.0)
    for regime in REGIMES:
        sel = labels == regime
        np.testing.assert_allclose(
            report.loc[regime, lead_cols].to_numpy(float),
            np.bincount(leader[sel], minlength=3) / sel.sum(),
        )
        np.testing.assert_allclose(report.loc[regime, "gate_1"], gates[sel, 1].mean(), rtol=1e-6)
    assert len(set(leader.tolist())) > 1  # not a degenerate gate
    with pytest.raises(ValueError, match="one label per observation"):
        regime_report(agent.policy, obs, labels[:-1])


class BanditBatchEnv:
    """Reward 1 for action 2 of Discrete(3); noise observations; 4-step truncated episodes."""

    num_tasks, episodes_per_task, max_episode_steps = 2, 8, 4
    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), dtype=np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.rng, self.t = np.random.default_rng(seed), 0
        return self.rng.standard_normal((2, 8, 3)).astype(np.float32)

    def step(self, actions: np.ndarray):
        self.t += 1
        end = np.full((2, 8), self.t % 4 == 0)
        obs = self.rng.standard_normal((2, 8, 3)).astype(np.float32)
        reward = (actions == 2).astype(np.float32)
        return obs, reward, np.zeros_like(end), end, {"final_obs": obs}


def test_moe_agent_learns_and_round_trips(tmp_path: Path) -> None:
    env = BanditBatchEnv()
    agent = MoEAgent.from_env(env, PPOConfig(n_steps=16, learning_rate=3e-3, num_experts=2))
    agent.learn(env, 16 * 16 * 10)
    assert agent.logs[-1]["rollout/ep_rew_mean"] > 0.9 * 4
    path = tmp_path / "moe.pt"
    agent.save_model(path)
    loaded = MoEAgent.load_model(path)
    assert isinstance(loaded, MoEAgent)
    obs = np.random.default_rng(1).standard_normal((10, 3)).astype(np.float32)
    np.testing.assert_array_equal(agent.gate_weights(obs), loaded.gate_weights(obs))
    adapted = agent.adapt(env, num_steps=1)
    assert isinstance(adapted, MoEAgent)
