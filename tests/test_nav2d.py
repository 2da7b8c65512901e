"""2D navigation env (MAML paper) and the batched sampler on it: masks, bootstrap info,
per-task params, no cross-task leakage, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metatrade.envs.nav2d import Navigation2DBatchEnv, Navigation2DFamily
from metatrade.meta.advantages import compute_advantages
from metatrade.meta.inner import expand_to_tasks
from metatrade.meta.protocols import BatchEnv, TaskFamily
from metatrade.meta.sampler import sample_episodes
from nav_helpers import ConstantPolicy


def test_env_reward_clipping_termination_and_autoreset() -> None:
    env = Navigation2DBatchEnv(
        np.array([[0.05, 0.0], [0.3, -0.2]]), episodes_per_task=2, max_episode_steps=3
    )
    assert isinstance(env, BatchEnv)
    obs = env.reset(seed=0)
    assert obs.shape == (2, 2, 2) and obs.dtype == np.float32 and not obs.any()
    actions = np.array([[[0.05, 0.0], [1.0, 1.0]], [[0.05, 0.0], [-1.0, 0.0]]])
    obs, rew, term, trunc, info = env.step(actions)
    # clipped to [-0.1, 0.1]; reward = -distance after the move
    np.testing.assert_allclose(info["final_obs"][0, 1], [0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(rew[0, 1], -np.hypot(0.05, 0.1), rtol=1e-6)
    np.testing.assert_allclose(rew[1, 1], -np.hypot(0.4, 0.2), rtol=1e-6)
    assert term.tolist() == [[True, False], [False, False]]
    np.testing.assert_allclose(obs[0, 0], [0.0, 0.0])  # same-step autoreset
    np.testing.assert_allclose(info["final_obs"][0, 0], [0.05, 0.0], rtol=1e-6)
    for _ in range(2):
        obs, rew, term, trunc, info = env.step(np.zeros((2, 2, 2)))
    assert trunc[1].all() and not term[1].any()  # time limit -> truncated, not terminated
    with pytest.raises(ValueError, match="actions shape"):
        env.step(np.zeros((2, 2)))


def test_normalized_actions_scale_the_unit_box_to_the_step_bound() -> None:
    """rllab's ``normalize`` view: the policy acts in [-1, 1], the env moves 0.1 x that."""
    fam = Navigation2DFamily(normalized_actions=True, max_episode_steps=5)
    env = fam.make_batch_env(
        [fam.sample_tasks(1, task_set="test", rng=np.random.default_rng(0))[0]], 3
    )
    assert env.action_space.low.tolist() == [-1.0, -1.0]
    assert env.action_space.high.tolist() == [1.0, 1.0]
    env.reset()
    actions = np.array([[[0.5, -0.2], [3.0, -7.0], [-1.0, 1.0]]])
    _, _, _, _, info = env.step(actions)
    expected = [[0.05, -0.02], [0.1, -0.1], [-0.1, 0.1]]
    np.testing.assert_allclose(info["final_obs"][0], expected, rtol=1e-6)


def test_family_samples_goals_in_the_square_reproducibly() -> None:
    fam = Navigation2DFamily()
    assert isinstance(fam, TaskFamily)
    a = fam.sample_tasks(50, task_set="train", rng=np.random.default_rng(3))
    b = fam.sample_tasks(50, task_set="train", rng=np.random.default_rng(3))
    assert a == b
    goals = np.array([t.goal for t in a])
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    env = fam.make_batch_env(a[:4], episodes_per_task=3)
    assert (env.num_tasks, env.episodes_per_task, env.max_episode_steps) == (4, 3, 100)
    with pytest.raises(ValueError, match="task_set"):
        fam.sample_tasks(2, task_set="dev", rng=np.random.default_rng(0))


def test_sampler_masks_after_first_end_and_records_last_obs() -> None:
    # task 0's goal is reached at step 1 (terminated); task 1 runs into the time limit (5).
    env = Navigation2DBatchEnv(
        np.array([[0.05, 0.0], [0.4, 0.4]]), episodes_per_task=3, max_episode_steps=5
    )
    policy = ConstantPolicy((0.05, 0.0), log_std=-30.0)  # deterministic in practice
    params = expand_to_tasks(dict(policy.named_parameters()), 2)
    ep = sample_episodes(policy, params, env, horizon=8, generator=torch.Generator().manual_seed(0))
    assert ep.obs.shape == (2, 3, 5, 2)  # stops once every slot ended (5 < 8)
    assert ep.lengths.tolist() == [[1, 1, 1], [5, 5, 5]]
    assert ep.mask[0].sum().item() == 3 and ep.mask[1].all()
    assert ep.terminated[0, :, 0].all() and not ep.truncated[0].any()
    assert ep.truncated[1, :, 4].all() and not ep.terminated[1].any()
    assert (ep.rewards[0, :, 1:] == 0).all()
    np.testing.assert_allclose(ep.last_obs[1].numpy(), np.full((3, 2), [0.25, 0.0]), atol=1e-6)
    # sampler cut (horizon < time limit): the last step is marked truncated for bootstrap
    ep2 = sample_episodes(
        policy, params, env, horizon=3, generator=torch.Generator().manual_seed(0)
    )
    assert ep2.truncated[1, :, 2].all() and ep2.lengths[1].tolist() == [3, 3, 3]
    np.testing.assert_allclose(ep2.last_obs[1].numpy(), np.full((3, 2), [0.15, 0.0]), atol=1e-6)
    out = compute_advantages(ep, gamma=0.99, gae_lambda=1.0)
    assert torch.isfinite(out.advantages).all() and (out.advantages[0, :, 1:] == 0).all()


def test_sampler_per_task_params_no_leakage_and_seeded_determinism() -> None:
    fam = Navigation2DFamily()
    env = fam.make_batch_env(fam.sample_tasks(3, task_set="train", rng=np.random.default_rng(0)), 4)
    policy = ConstantPolicy((0.0, 0.0), log_std=-1.0)
    per_task = {
        "mean": torch.tensor([[0.1, 0.0], [0.0, 0.1], [-0.1, 0.0]]),
        "log_std": torch.full((3, 2), -1.0),
    }

    def run(p):
        return sample_episodes(policy, p, env, generator=torch.Generator().manual_seed(7))

    a, b = run(per_task), run(per_task)
    for k, v in a.tensors().items():
        assert torch.equal(v, b.tensors()[k]), k
    torch.testing.assert_close(a.dist_params[:, 0, 0, :2], per_task["mean"])
    # changing task 2's parameters leaves tasks 0 and 1 bitwise identical
    changed = {k: v.clone() for k, v in per_task.items()}
    changed["mean"][2] = torch.tensor([0.1, 0.1])
    c = run(changed)
    assert torch.equal(a.actions[:2], c.actions[:2]) and torch.equal(a.rewards[:2], c.rewards[:2])
    assert not torch.equal(a.actions[2], c.actions[2])
    with pytest.raises(ValueError, match="num_tasks"):
        sample_episodes(policy, {k: v[:2] for k, v in per_task.items()}, env)


@pytest.mark.parametrize("space", ["box", "discrete"])
def test_mlp_fast_forward_matches_functional_call(space: str) -> None:
    import gymnasium as gym

    from metatrade.agents.policies import NetworkConfig, make_policy
    from metatrade.meta.sampler import _mlp_forward, is_shared, make_forward, policy_forward

    action_space = gym.spaces.Box(-1, 1, (2,)) if space == "box" else gym.spaces.Discrete(3)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,))
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8, 8)), obs_space, action_space, seed=0
    )
    gen = torch.Generator().manual_seed(0)
    theta = {
        k: v.detach() + 0.1 * torch.randn(v.shape, generator=gen)
        for k, v in policy.named_parameters()
    }
    shared = expand_to_tasks(theta, 3)  # a broadcast view: the one-matmul path
    per_task = {k: v + 0.1 * torch.randn((3, *v.shape), generator=gen) for k, v in theta.items()}
    obs = torch.randn(3, 5, 4, generator=gen)
    for p, is_view in ((shared, True), (per_task, False)):
        assert is_shared(p) == is_view
        assert _mlp_forward(policy, p) is not None  # the fast path is the one tested
        fast = make_forward(policy, p)(obs)
        per_row = torch.stack(
            [
                torch.func.functional_call(policy, {k: v[i] for k, v in p.items()}, (obs[i],))
                for i in range(3)
            ]
        )
        torch.testing.assert_close(fast, per_row)
        torch.testing.assert_close(policy_forward(policy, p, obs), per_row)
