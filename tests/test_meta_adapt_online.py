"""``adapt_online``: the one test-time adaptation loop behind every evaluation path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metatrade.agents.policies import make_policy
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.adapt import adapt_online
from metatrade.meta.advantages import compute_advantages
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.inner import expand_to_tasks, task_gradients
from metatrade.meta.sampler import sample_episodes
from metatrade.meta.surrogates import vpg_loss


@pytest.fixture()
def setup():
    torch.set_num_threads(1)
    family = Navigation2DFamily(max_episode_steps=20)
    env = family.make_batch_env(
        family.sample_tasks(3, task_set="test", rng=np.random.default_rng(0)), 4
    )
    policy = make_policy("mlp", env.observation_space, env.action_space, hidden_sizes=(8,), seed=0)
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    return policy, params, env


def test_equals_repeated_sample_and_adapt_and_leaves_theta_unchanged(setup) -> None:
    policy, params, env = setup
    before = {k: v.detach().clone() for k, v in params.items()}
    sizes = (0.5, 0.25)
    config = AdaptationConfig(inner_step_sizes=sizes, gamma=0.9, gae_lambda=0.95)
    result = adapt_online(
        policy,
        expand_to_tasks(params, 3),
        env,
        config=config,
        num_steps=3,
        generator=torch.Generator().manual_seed(5),
        keep=(0, 2),
    )

    # the same steps by hand: sample with the current params, refit the baseline, one step
    gen = torch.Generator().manual_seed(5)
    current = expand_to_tasks({k: v.detach() for k, v in params.items()}, 3)
    returns, task_returns, after = [], [], {}
    for k in range(4):
        after[k] = current
        batch = sample_episodes(policy, current, env, generator=gen)
        returns.append(batch.episode_returns().mean().item())
        task_returns.append(batch.episode_returns().mean(dim=1))
        if k == 3:
            break
        batch = compute_advantages(batch, 0.9, 0.95)
        grads = task_gradients(
            lambda p, b: vpg_loss(policy, p, Episodes.from_tensors(b)),
            current,
            batch,
            create_graph=False,
        )
        current = {n: v - sizes[min(k, 1)] * grads[n] for n, v in current.items()}

    # the mean over tasks of per-task means (equal to the mean over all episodes up to
    # float rounding when every task has the same episode count)
    assert result.returns == pytest.approx(returns, rel=1e-6)
    assert len(result.task_returns) == 4
    for got, want in zip(result.task_returns, task_returns, strict=True):
        assert got.shape == (3,)
        torch.testing.assert_close(got, want)
    for name, value in current.items():
        assert result.params[name].shape == (3, *params[name].shape)
        assert torch.equal(result.params[name], value)
        assert torch.equal(result.snapshots[2][name], after[2][name])
        assert torch.equal(result.snapshots[0][name], before[name].expand(3, *before[name].shape))
        assert not result.params[name].requires_grad
    assert set(result.snapshots) == {0, 2}
    for name, value in params.items():  # theta bitwise unchanged, still a leaf with grad
        assert torch.equal(value, before[name]) and value.requires_grad and value.grad is None
    assert any(not torch.equal(result.params[n][0], before[n]) for n in before)


def test_measure_final_and_env_seed(setup) -> None:
    policy, params, env = setup
    gen = torch.Generator().manual_seed(1)
    theta, config = expand_to_tasks(params, 3), AdaptationConfig()
    short = adapt_online(
        policy, theta, env, config=config, num_steps=2, generator=gen, measure_final=False
    )
    assert len(short.returns) == 2  # no rollout after the last step
    none = adapt_online(
        policy, theta, env, config=config, num_steps=0, generator=gen, measure_final=False
    )
    assert none.returns == [] and all(v.shape[0] == 3 for v in none.params.values())

    # env_seed(k) seeds the reset of the batch sampled after k steps
    seen: list[int] = []
    seeded = adapt_online(
        policy,
        theta,
        env,
        config=config,
        num_steps=2,
        generator=gen,
        env_seed=lambda k: seen.append(k) or 100 + k,
    )
    assert seen == [0, 1, 2] and len(seeded.returns) == 3
