"""PPOAgent on small hand-written BatchEnvs: GAE wiring, learning, determinism, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from metatrade.agents import CheckpointError, PPOAgent, PPOConfig
from metatrade.meta.protocols import BatchEnv


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only spin on a shared machine
    yield
    torch.set_num_threads(threads)


class BanditBatchEnv:
    """T x E contextual-free bandits: reward 1 for action ``good`` else 0 (Discrete(3)), or
    reward -(a - target)^2 for a Box(1,) action. Episodes last ``horizon`` steps (truncated).
    Observations are noise, so the only thing to learn is the action."""

    def __init__(
        self, num_tasks: int = 2, episodes: int = 8, horizon: int = 4, continuous: bool = False
    ) -> None:
        self.num_tasks, self.episodes_per_task, self.max_episode_steps = (
            num_tasks,
            episodes,
            horizon,
        )
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), dtype=np.float32)
        self.continuous = continuous
        self.action_space: gym.spaces.Space = (
            gym.spaces.Box(-2.0, 2.0, (1,), dtype=np.float32)
            if continuous
            else gym.spaces.Discrete(3)
        )
        self.good, self.target = 2, 0.5
        self.rng = np.random.default_rng(0)
        self.t = np.zeros((num_tasks, episodes), dtype=np.int64)

    def _obs(self) -> np.ndarray:
        return self.rng.standard_normal((self.num_tasks, self.episodes_per_task, 3)).astype(
            np.float32
        )

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.rng = np.random.default_rng(seed)
        self.t[:] = 0
        return self._obs()

    def step(self, actions: np.ndarray):
        if self.continuous:
            reward = -((actions[..., 0] - self.target) ** 2)
        else:
            reward = (actions == self.good).astype(np.float32)
        self.t += 1
        truncated = self.t >= self.max_episode_steps
        terminated = np.zeros_like(truncated)
        obs = self._obs()
        final_obs = obs.copy()
        self.t[truncated] = 0
        obs[truncated] = self._obs()[truncated]  # same-step autoreset
        return obs, reward.astype(np.float32), terminated, truncated, {"final_obs": final_obs}


class ChainBatchEnv:
    """Deterministic: reward 1 every step, obs = [step index]; the episode ends after 3 steps
    by termination (``terminate=True``) or by truncation."""

    def __init__(self, terminate: bool) -> None:
        self.num_tasks, self.episodes_per_task, self.max_episode_steps = 1, 1, 3
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate = terminate
        self.t = 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.t = 0
        return np.zeros((1, 1, 1), dtype=np.float32)

    def step(self, actions: np.ndarray):
        self.t += 1
        end = self.t == 3
        final_obs = np.full((1, 1, 1), self.t, dtype=np.float32)
        if end:
            self.t = 0
        obs = np.full((1, 1, 1), self.t, dtype=np.float32)
        flag = np.array([[end]])
        info: dict[str, Any] = {"final_obs": final_obs}
        no = np.array([[False]])
        return (
            obs,
            np.ones((1, 1), np.float32),
            flag if self.terminate else no,
            no if self.terminate else flag,
            info,
        )


def constant_value(agent: PPOAgent, c: float) -> None:
    """Make the critic output the constant ``c`` (zero last layer, bias c)."""
    with torch.no_grad():
        agent.value.head.out.weight.zero_()
        agent.value.head.out.bias.fill_(c)


@pytest.mark.parametrize(
    "make",
    [
        BanditBatchEnv,
        lambda: BanditBatchEnv(continuous=True),
        lambda: ChainBatchEnv(True),
        lambda: ChainBatchEnv(False),
    ],
    ids=["bandit", "bandit-box", "chain-terminated", "chain-truncated"],
)
def test_toy_envs_follow_the_protocol(make: Any) -> None:
    """The PPO tests' stand-ins keep ``BatchEnv``'s contract (meta.protocols): obs
    [T, E, *obs_shape] float32, reward float32 and terminated / truncated bool [T, E], every
    episode over within ``max_episode_steps``, ``info["final_obs"]`` shaped like obs."""
    env = make()
    assert isinstance(env, BatchEnv)
    shape = (env.num_tasks, env.episodes_per_task)
    obs_shape = (*shape, *env.observation_space.shape)
    obs = env.reset(seed=0)
    assert obs.shape == obs_shape and obs.dtype == np.float32
    ended = np.zeros(shape, dtype=bool)
    for _ in range(env.max_episode_steps):
        actions = np.array([[env.action_space.sample() for _ in range(shape[1])]] * shape[0])
        obs, reward, terminated, truncated, info = env.step(actions)
        assert obs.shape == obs_shape and info["final_obs"].shape == obs_shape
        assert reward.shape == shape and reward.dtype == np.float32
        assert terminated.shape == truncated.shape == shape
        assert terminated.dtype == truncated.dtype == np.bool_
        ended |= terminated | truncated
    assert ended.all()


@pytest.mark.parametrize("terminate", [True, False], ids=["terminated", "truncated"])
def test_gae_returns_match_hand_computation(terminate: bool) -> None:
    """gamma 0.9, lambda 1, V = c: the lambda-returns are the discounted returns, with a
    bootstrap of c after a truncation (and at the rollout's cut) but none after termination;
    the recursion never crosses the episode end."""
    gamma, c = 0.9, 2.0
    env = ChainBatchEnv(terminate)
    agent = PPOAgent.from_env(env, PPOConfig(n_steps=5, gamma=gamma, gae_lambda=1.0))
    constant_value(agent, c)
    agent._reset(env)
    _, rollout = agent.collect_rollout(env, env.reset())
    adv, returns, values = agent.compute_advantages(rollout)

    tail = 0.0 if terminate else gamma * c  # value after the episode's last step
    g2 = 1 + tail
    g1 = 1 + gamma * g2
    g0 = 1 + gamma * g1
    g4 = 1 + gamma * c  # rollout cut after step 4: bootstrap from V(s_5) = c
    g3 = 1 + gamma * g4
    expected = torch.tensor([g0, g1, g2, g3, g4], dtype=returns.dtype)
    torch.testing.assert_close(returns[:, 0], expected)
    torch.testing.assert_close(adv[:, 0], expected - c)
    assert rollout.episode_returns == [3.0]
    assert rollout.terminated[:, 0].tolist() == [False, False, terminate, False, False]
    assert rollout.dones[:, 0].tolist() == [False, False, True, False, False]
    torch.testing.assert_close(values, torch.full_like(values, c))


def test_ppo_learns_bandit_quickly() -> None:
    env = BanditBatchEnv()
    agent = PPOAgent.from_env(env, PPOConfig(n_steps=16, learning_rate=3e-3, seed=1))
    logs: list[dict[str, float]] = []
    agent.learn(env, total_timesteps=16 * 16 * 12, log_fn=lambda d, step: logs.append(d))
    assert len(logs) == 12 and len(agent.logs) == 12
    assert {"rollout/ep_rew_mean", "train/policy_loss", "train/approx_kl"} <= set(logs[-1])
    assert logs[-1]["rollout/ep_rew_mean"] > 0.9 * env.max_episode_steps
    assert logs[0]["rollout/ep_rew_mean"] < 0.6 * env.max_episode_steps
    obs = env.reset(seed=99).reshape(-1, 3)
    assert (agent.select_action(obs, deterministic=True) == 2).all()


def test_ppo_continuous_actions_move_toward_target() -> None:
    env = BanditBatchEnv(continuous=True)
    config = PPOConfig(n_steps=16, learning_rate=3e-3, init_log_std=-1.0, seed=0)
    agent = PPOAgent.from_env(env, config)
    before = agent.select_action(np.zeros((8, 3), np.float32), deterministic=True)
    agent.learn(env, total_timesteps=16 * 16 * 10)
    after = agent.select_action(np.zeros((8, 3), np.float32), deterministic=True)
    assert after.shape == (8, 1) and after.dtype == np.float32
    assert np.abs(after - 0.5).mean() < 0.5 * np.abs(before - 0.5).mean()
    single = agent.select_action(np.zeros(3, np.float32))
    assert single.shape == (1,) and -2.0 <= single[0] <= 2.0


def test_callback_stops_training() -> None:
    env = BanditBatchEnv()
    agent = PPOAgent.from_env(env, PPOConfig(n_steps=4))
    agent.learn(env, total_timesteps=10_000, callback=lambda a, logs: len(a.logs) < 2)
    assert len(agent.logs) == 2


def test_same_seed_same_run_different_seed_differs() -> None:
    def run(seed: int) -> PPOAgent:
        env = BanditBatchEnv()
        return PPOAgent.from_env(env, PPOConfig(n_steps=8, seed=seed)).learn(env, 8 * 16 * 2)

    a, b, c = run(3), run(3), run(4)
    for name, tensor in a.policy.state_dict().items():
        assert torch.equal(tensor, b.policy.state_dict()[name]), name
    assert a.logs[-1]["train/policy_loss"] == b.logs[-1]["train/policy_loss"]
    assert any(
        not torch.equal(t, c.policy.state_dict()[k]) for k, t in a.policy.state_dict().items()
    )


def test_adapt_returns_a_trained_copy_and_leaves_self_unchanged() -> None:
    env = BanditBatchEnv()
    agent = PPOAgent.from_env(env, PPOConfig(n_steps=8))
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    adapted = agent.adapt(env, num_steps=2, learning_rate=1e-2)
    assert adapted is not agent and len(adapted.logs) == 2
    for k, v in agent.policy.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in adapted.policy.state_dict().items())


@pytest.mark.parametrize("kind", ["mlp", "moe"])
def test_save_load_roundtrip_identical_actions(tmp_path: Path, kind: str) -> None:
    env = BanditBatchEnv()
    agent = PPOAgent.from_env(env, PPOConfig(n_steps=8, kind=kind, hidden_sizes=(16,)))
    agent.learn(env, 8 * 16)
    path = tmp_path / "agent.pt"
    agent.save_model(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pt"]  # no temp file left
    raw = torch.load(path, weights_only=True)  # plain tensors and strings only
    assert raw["kind"] == "PPOAgent"

    loaded = PPOAgent.load_model(path, env=env)
    obs = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        agent.select_action(obs, deterministic=True), loaded.select_action(obs, deterministic=True)
    )
    # The sampling RNG is saved too: stochastic actions match as well.
    np.testing.assert_array_equal(agent.select_action(obs), loaded.select_action(obs))
    # Loading into an existing compatible agent (instance call) works in place.
    other = PPOAgent.from_env(env, PPOConfig(n_steps=8, kind=kind, hidden_sizes=(16,), seed=9))
    assert other.load_model(path) is other
    for k, v in agent.policy.state_dict().items():
        assert torch.equal(v, other.policy.state_dict()[k])
    # Training continues identically from the checkpoint.
    agent.learn(env, 8 * 16)
    loaded.learn(env, 8 * 16)
    for k, v in agent.policy.state_dict().items():
        assert torch.equal(v, loaded.policy.state_dict()[k]), k


def test_incompatible_checkpoint_names_what_differs(tmp_path: Path) -> None:
    env = BanditBatchEnv()
    path = tmp_path / "agent.pt"
    PPOAgent.from_env(env, PPOConfig(hidden_sizes=(16,))).save_model(path)

    wider_obs = gym.spaces.Box(-np.inf, np.inf, (5,), dtype=np.float32)
    other = PPOAgent(wider_obs, gym.spaces.Discrete(3), PPOConfig(hidden_sizes=(16,)))
    with pytest.raises(CheckpointError, match=r"agent\.pt.*obs_dim: checkpoint has 3, expected 5"):
        other.load_model(path)
    wider_net = PPOAgent.from_env(env, PPOConfig(hidden_sizes=(32,)))
    with pytest.raises(CheckpointError, match="hidden_sizes"):
        wider_net.load_model(path)

    class FiveActions(BanditBatchEnv):
        def __init__(self) -> None:
            super().__init__()
            self.action_space = gym.spaces.Discrete(5)

    with pytest.raises(CheckpointError, match="action_space"):
        PPOAgent.load_model(path, env=FiveActions())


def test_corrupted_or_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    env = BanditBatchEnv()
    path = tmp_path / "agent.pt"
    PPOAgent.from_env(env, PPOConfig(hidden_sizes=(16,))).save_model(path)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: cannot be read"):
        PPOAgent.load_model(truncated)

    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"corrupted\.pt"):
        PPOAgent.load_model(corrupted)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a metatrade checkpoint"):
        PPOAgent.load_model(foreign)

    with pytest.raises(CheckpointError, match="no such file"):
        PPOAgent.load_model(tmp_path / "missing.pt")


def test_bad_config_and_env_mismatch_are_clear() -> None:
    with pytest.raises(ValueError, match=r"gamma\n.*less than or equal to 1"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ValueError, match="learning_rte"):
        PPOConfig.from_dict({"learning_rte": 1e-3})
    agent = PPOAgent(
        gym.spaces.Box(-1, 1, (4,), dtype=np.float32), gym.spaces.Discrete(3), PPOConfig()
    )
    with pytest.raises(ValueError, match="observation shape"):
        agent.learn(BanditBatchEnv(), 100)
    with pytest.raises(ValueError, match="obs_dim=4"):
        agent.select_action(np.zeros(3))
