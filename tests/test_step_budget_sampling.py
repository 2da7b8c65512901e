"""Step-budget batches (rllab's sampler, the MAML paper's test protocol): whole episodes until
each task has N steps; emptied slots count for nothing in baselines, losses and returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_helpers import adapt_on
from metatrade.envs.nav2d import Navigation2DBatchEnv, Navigation2DFamily
from metatrade.meta.adapt import adapt
from metatrade.meta.advantages import compute_advantages
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.episodes import Episodes, concat_episodes, keep_episodes
from metatrade.meta.estimators import SampledSource, measured_returns, sample_for_inner_loop
from metatrade.meta.inner import expand_to_tasks
from metatrade.meta.sampler import sample_episodes, sample_episodes_for_steps
from metatrade.meta.surrogates import vpg_loss
from nav_helpers import ConstantPolicy


def _deterministic_setup() -> tuple[ConstantPolicy, dict, Navigation2DBatchEnv]:
    # task 0 reaches its goal at step 1 (episodes of length 1); task 1 runs into the
    # time limit (length 5)
    env = Navigation2DBatchEnv(
        np.array([[0.05, 0.0], [0.4, 0.4]]), episodes_per_task=3, max_episode_steps=5
    )
    policy = ConstantPolicy((0.05, 0.0), log_std=-30.0)
    return policy, expand_to_tasks(dict(policy.named_parameters()), 2), env


def test_whole_episodes_until_each_task_reaches_the_budget() -> None:
    policy, params, env = _deterministic_setup()
    gen = torch.Generator().manual_seed(0)
    ep = sample_episodes_for_steps(policy, params, env, steps_per_task=7, generator=gen)
    # task 0 needs 7 one-step episodes (3 rounds of 3); task 1 needs 2 five-step episodes
    # (a third would start at 10 >= 7). Columns no task keeps (the 8th and 9th) are dropped.
    assert ep.obs.shape[:3] == (2, 7, 5)
    assert ep.lengths.tolist() == [[1] * 7, [5, 5, 0, 0, 0, 0, 0]]
    assert ep.mask.sum(dim=(1, 2)).tolist() == [7.0, 10.0]
    assert not ep.terminated[1].any() and ep.truncated[1].sum().item() == 2
    assert (ep.rewards[1, 2:] == 0).all() and (ep.mask[1, 2:] == 0).all()
    expected = [-0.0, -np.mean([np.hypot(0.4 - 0.05 * (t + 1), 0.4) for t in range(5)]) * 5]
    np.testing.assert_allclose(ep.task_mean_returns().numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="steps_per_task"):
        sample_episodes_for_steps(policy, params, env, steps_per_task=0)


def test_emptied_slots_count_for_nothing_in_advantages_and_losses() -> None:
    fam = Navigation2DFamily(normalized_actions=True, max_episode_steps=20)
    env = fam.make_batch_env(fam.sample_tasks(2, task_set="train", rng=np.random.default_rng(1)), 5)
    policy = ConstantPolicy((0.3, -0.2), log_std=0.0)
    params = dict(policy.named_parameters())
    theta = expand_to_tasks(params, 2)
    ep = sample_episodes(policy, theta, env, generator=torch.Generator().manual_seed(3))
    keep = torch.tensor([[True, False, True, False, False], [True, True, False, True, False]])
    emptied = compute_advantages(keep_episodes(ep, keep), 0.99, 1.0)
    for task in range(2):
        cols = keep[task].nonzero().squeeze(1)
        alone = Episodes(**{k: v[task : task + 1, cols] for k, v in ep.tensors().items()})
        alone = compute_advantages(alone, 0.99, 1.0)
        one = Episodes(**{k: v[task : task + 1] for k, v in emptied.tensors().items()})
        torch.testing.assert_close(vpg_loss(policy, params, one), vpg_loss(policy, params, alone))
        torch.testing.assert_close(one.task_mean_returns(), alone.task_mean_returns())
    # adapting on the emptied batch ignores the emptied episodes, task by task
    adapted = adapt_on(policy, params, emptied, lr=0.1)
    assert all(torch.isfinite(v).all() for v in adapted.values())


def test_concat_pads_the_time_axis_and_keeps_every_episode() -> None:
    policy, params, env = _deterministic_setup()
    gen = torch.Generator().manual_seed(0)
    short = sample_episodes(policy, params, env, horizon=2, generator=gen)
    full = sample_episodes(policy, params, env, generator=gen)
    both = concat_episodes([short, full])
    assert both.obs.shape[:3] == (2, 6, 5)
    assert torch.equal(both.lengths, torch.cat([short.lengths, full.lengths], dim=1))
    assert torch.equal(both.rewards[:, :3, :2], short.rewards) and (both.mask[:, :3, 2:] == 0).all()
    with pytest.raises(ValueError, match="at least one"):
        concat_episodes([])


def _measured(policy, params, env, config: AdaptationConfig, steps: int, seed: int) -> list:
    """[T] mean return after k = 0..steps test-time steps (fresh episodes per step)."""
    gen = torch.Generator().manual_seed(seed)
    source = SampledSource(policy, env, config=config, generator=gen)
    with torch.no_grad():
        adapted = adapt(policy, params, source, config=config, second_order=False, num_steps=steps)
        return measured_returns(source, adapted)


def test_test_time_returns_by_steps_are_the_mean_over_the_batch_episodes() -> None:
    """The paper's "AverageReturn": the mean over the episodes of a 4000-step-style batch, so
    short (successful) episodes, which a step budget holds more of, weigh more."""
    policy, params, env = _deterministic_setup()
    by_steps = _measured(policy, params, env, AdaptationConfig(steps_per_task=7), 0, 0)
    by_count = _measured(policy, params, env, AdaptationConfig(), 0, 0)
    # task 0's episodes return -0 (goal reached at once) and task 1's are all alike, so the
    # averages agree; the budget changes how many episodes enter, not what one returns
    torch.testing.assert_close(by_steps[0], by_count[0])
    fam = Navigation2DFamily(normalized_actions=True)
    env2 = fam.make_batch_env(fam.sample_tasks(3, task_set="test", rng=np.random.default_rng(0)), 4)
    stochastic = ConstantPolicy((0.0, 0.0), log_std=0.0)
    theta = expand_to_tasks(dict(stochastic.named_parameters()), 3)
    config = AdaptationConfig(inner_lr=0.5, steps_per_task=450)
    res = _measured(stochastic, theta, env2, config, 2, 1)
    assert len(res) == 3 and all(torch.isfinite(r).all() for r in res)


def test_meta_learner_trains_on_step_budget_batches() -> None:
    from metatrade.agents.policies import NetworkConfig, make_policy
    from metatrade.meta.learner import MetaConfig, MetaLearner

    fam = Navigation2DFamily(normalized_actions=True, max_episode_steps=20)
    probe = fam.make_batch_env(
        fam.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)),
        probe.observation_space,
        probe.action_space,
        seed=0,
    )
    cfg = MetaConfig(
        meta_batch_size=3, episodes_per_task=4, num_evaluation_episodes=4, steps_per_task=150
    )
    learner = MetaLearner(policy, fam, cfg)
    env = fam.make_batch_env(fam.sample_tasks(3, task_set="train", rng=np.random.default_rng(1)), 4)
    theta = expand_to_tasks(learner.params, 3)
    batch = sample_for_inner_loop(
        policy, theta, env, config=cfg, generator=torch.Generator().manual_seed(0)
    )
    steps = batch.mask.sum(dim=(1, 2))
    assert (steps >= 150).all() and (steps < 150 + 20).all()  # whole episodes, just past it
    assert batch.advantages is not None and torch.isfinite(batch.advantages).all()
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    stats = learner.step()
    assert np.isfinite(stats["meta/return_post"]) and stats["meta/skipped"] == 0.0
    assert any(not torch.equal(before[k], v) for k, v in learner.params.items())
    with pytest.raises(ValueError, match="steps_per_task"):
        MetaConfig(steps_per_task=0)
