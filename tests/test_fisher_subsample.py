"""TRPO's subsampled Fisher (``cg_subsample``, rllab's ``subsample_factor``): a random fraction
of every task's episodes, all tasks kept, the Jacobian taken at the full batch's theta'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.episodes import Episodes, random_episode_subset, select_episodes
from metatrade.meta.learner import MetaConfig, MetaLearner


def _episodes(lengths: list[list[int]]) -> Episodes:
    lengths_t = torch.tensor(lengths)
    t, e = lengths_t.shape
    h = 4
    obs = torch.arange(t * e * h * 2, dtype=torch.float32).view(t, e, h, 2)
    mask = (torch.arange(h) < lengths_t.unsqueeze(-1)).float()
    zeros = torch.zeros(t, e, h)
    return Episodes(
        obs=obs,
        actions=obs.clone(),
        rewards=zeros.clone(),
        mask=mask,
        terminated=zeros.bool(),
        truncated=zeros.bool(),
        log_probs=zeros.clone(),
        dist_params=torch.zeros(t, e, h, 4),
        last_obs=obs[:, :, -1],
        lengths=lengths_t,
    )


def test_select_episodes_gathers_each_tasks_own_slots() -> None:
    ep = _episodes([[4, 4, 4], [4, 4, 4]])
    out = select_episodes(ep, torch.tensor([[2, 0], [1, 1]]))
    assert out.obs.shape == (2, 2, 4, 2) and out.lengths.shape == (2, 2)
    assert torch.equal(out.obs[0, 0], ep.obs[0, 2]) and torch.equal(out.obs[0, 1], ep.obs[0, 0])
    assert torch.equal(out.obs[1, 0], ep.obs[1, 1]) and torch.equal(
        out.last_obs[1, 1], ep.last_obs[1, 1]
    )


def test_random_subset_takes_non_empty_slots_first_without_repeats() -> None:
    # task 0 has 4 episodes; task 1 only 2 (step-budget batches leave empty slots)
    ep = _episodes([[4, 3, 2, 1, 0, 0], [4, 4, 0, 0, 0, 0]])
    gen = torch.Generator().manual_seed(0)
    slots = random_episode_subset(ep, 0.5, gen)
    assert slots.shape == (2, 2)  # ceil(0.5 * 4)
    for task in range(2):
        assert len(set(slots[task].tolist())) == 2
        assert (ep.lengths[task, slots[task]] > 0).all()
    assert sorted(slots[1].tolist()) == [0, 1]
    draws = {tuple(random_episode_subset(ep, 0.5, gen)[0].tolist()) for _ in range(50)}
    assert len(draws) > 3  # really random among task 0's four episodes
    with pytest.raises(ValueError, match="fraction"):
        random_episode_subset(ep, 0.0)


def _learner(cg_subsample: float, cg_iters: int = 10) -> MetaLearner:
    fam = Navigation2DFamily(max_episode_steps=10)
    env = fam.make_batch_env(fam.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1)
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8, 8)),
        env.observation_space,
        env.action_space,
        seed=0,
    )
    cfg = MetaConfig(
        meta_batch_size=3,
        episodes_per_task=4,
        num_evaluation_episodes=4,
        cg_subsample=cg_subsample,
        cg_iters=cg_iters,
        seed=1,
    )
    return MetaLearner(policy, fam, cfg)


def test_a_subset_holding_every_episode_gives_the_exact_fishers_step() -> None:
    """0.99 of 4 episodes is all 4 (in a shuffled order): the subset path must then take the
    exact Fisher's step, which pins the KL weights and the Jacobian's evaluation point. (Four
    CG iterations: in float32, ten amplify the summation-order rounding to ~1e-2 here.)"""
    exact, subset = _learner(1.0, cg_iters=4), _learner(0.99, cg_iters=4)
    start = {k: v.detach().clone() for k, v in exact.params.items()}
    stats_exact, stats_subset = exact.step(), subset.step()
    assert stats_exact["meta/step_accepted"] == stats_subset["meta/step_accepted"] == 1.0
    for name in exact.params:
        assert not torch.equal(exact.params[name].detach(), start[name])
        torch.testing.assert_close(subset.params[name], exact.params[name], rtol=1e-5, atol=1e-7)


def test_a_smaller_subset_still_takes_a_trust_region_step() -> None:
    learner = _learner(0.5)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    for _ in range(3):
        stats = learner.step()
        assert stats["meta/kl"] <= learner.config.max_kl
    assert any(not torch.equal(before[k], v.detach()) for k, v in learner.params.items())
