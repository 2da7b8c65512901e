"""MAMLAgent on the MAML paper's 2D navigation family (tiny config): learn, adapt, act,
checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metatrade.agents import CheckpointError, MAMLAgent
from metatrade.envs.nav2d import Navigation2DFamily, NavTask
from metatrade.meta.learner import MetaConfig

HORIZON = 10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only spin on a shared machine
    yield
    torch.set_num_threads(threads)


def make_agent(**policy_kw) -> tuple[MAMLAgent, Navigation2DFamily]:
    family = Navigation2DFamily(max_episode_steps=HORIZON)
    env = family.make_batch_env([NavTask((0.3, 0.3))], 2)
    config = MetaConfig(
        meta_batch_size=3,
        episodes_per_task=4,
        num_evaluation_episodes=4,
        optimizer="adam",
        lr=1e-2,
        seed=0,
    )
    agent = MAMLAgent(
        env.observation_space, env.action_space, family, config, hidden_sizes=(16, 16), **policy_kw
    )
    return agent, family


def test_learn_changes_meta_parameters_and_logs() -> None:
    agent, family = make_agent()
    before = {k: v.clone() for k, v in agent.params.items()}
    seen: list[int] = []
    agent.learn(family, 2, log_fn=lambda logs, it: seen.append(it))
    assert seen == [1, 2] and len(agent.logs) == 2
    assert {"meta/loss", "meta/return_pre", "meta/return_post"} <= set(agent.logs[-1])
    assert any(not torch.equal(before[k], v) for k, v in agent.params.items())


def test_adapt_moves_toward_the_goal_and_leaves_theta_unchanged() -> None:
    agent, family = make_agent()
    theta = {k: v.clone() for k, v in agent.params.items()}
    goal = np.array([0.5, 0.5])
    env = family.make_batch_env([NavTask(tuple(goal))], 20)
    origin = np.zeros(2, np.float32)

    fast = agent.adapt(env, num_steps=2, lr=0.5)
    for k, v in agent.params.items():
        assert torch.equal(v, theta[k]), k  # theta bitwise unchanged
    assert fast.adapted_params is not None and agent.adapted_params is None
    before = agent.select_action(origin, deterministic=True)
    after = fast.select_action(origin, deterministic=True)
    assert after.shape == (2,) and np.all(np.abs(after) <= 0.1)
    # The mean step from the origin turns toward the goal.
    assert float(after @ goal) > float(before @ goal)

    same = agent.adapt(env, num_steps=0)
    np.testing.assert_array_equal(same.select_action(origin, deterministic=True), before)
    with pytest.raises(ValueError, match="num_tasks=2"):
        agent.adapt(family.make_batch_env([NavTask((0, 0)), NavTask((0.1, 0))], 2))


def test_learn_without_family_is_a_clear_error() -> None:
    agent, _ = make_agent()
    agent.learner.family = None
    with pytest.raises(ValueError, match="task family"):
        agent.learn(None, 1)


@pytest.mark.parametrize("kind", ["mlp", "moe", "linear"])
def test_save_load_roundtrip(tmp_path: Path, kind: str) -> None:
    agent, family = make_agent(policy_kind=kind, num_experts=2)
    agent.learn(family, 1)
    obs = np.random.default_rng(0).uniform(-0.5, 0.5, (6, 2)).astype(np.float32)

    path = tmp_path / "maml.pt"
    agent.save_model(path)
    loaded = MAMLAgent.load_model(path)
    np.testing.assert_array_equal(
        agent.select_action(obs, deterministic=True), loaded.select_action(obs, deterministic=True)
    )
    for k, v in agent.params.items():
        assert torch.equal(v, loaded.params[k])

    # An adapted agent keeps its adapted parameters through a checkpoint.
    fast = agent.adapt(family.make_batch_env([NavTask((0.2, -0.4))], 4), num_steps=1)
    fast.save_model(tmp_path / "fast.pt")
    fast_loaded = MAMLAgent.load_model(tmp_path / "fast.pt")
    np.testing.assert_array_equal(
        fast.select_action(obs, deterministic=True),
        fast_loaded.select_action(obs, deterministic=True),
    )

    # A differently shaped policy cannot load it, and says why.
    other, _ = make_agent(policy_kind=kind, num_experts=3)
    with pytest.raises(CheckpointError, match="num_experts: checkpoint has 2, expected 3"):
        other.load_model(path)


def test_predict_is_sb3s_action_and_no_state() -> None:
    """BaseAgent.predict follows Stable-Baselines3: (action, None), the same action as
    select_action with the mode."""
    agent, _ = make_agent()
    obs = np.zeros((3, 2), dtype=np.float32)
    action, state = agent.predict(obs, deterministic=True)
    assert state is None
    np.testing.assert_array_equal(action, agent.select_action(obs, deterministic=True))
