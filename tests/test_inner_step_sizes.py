"""Per-step inner step sizes (``MetaConfig.inner_step_sizes``, ``adapt(lr=(a, b))``): the MAML
paper's 2D-navigation test schedule (0.5, then 0.25), usable in training too."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metatrade.agents.policies import make_policy
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.adapt import adapt
from metatrade.meta.advantages import compute_advantages
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.sampler import sample_episodes


def _policy_and_family() -> tuple[torch.nn.Module, Navigation2DFamily]:
    fam = Navigation2DFamily(max_episode_steps=10)
    env = fam.make_batch_env(fam.sample_tasks(1, "train", np.random.default_rng(0)), 1)
    policy = make_policy(
        "mlp", env.observation_space, env.action_space, hidden_sizes=(8, 8), seed=0
    )
    return policy, fam


def test_adapt_takes_each_steps_own_size_and_repeats_the_last() -> None:
    policy, fam = _policy_and_family()
    env = fam.make_batch_env(fam.sample_tasks(2, "train", np.random.default_rng(1)), 3)
    params = {k: v.detach() for k, v in policy.named_parameters()}
    ep = compute_advantages(
        sample_episodes(policy, params, env, generator=torch.Generator().manual_seed(0)), 0.99, 1.0
    )
    by_schedule = adapt(policy, params, ep, num_steps=3, lr=(0.3, 0.1))
    by_hand = adapt(policy, params, ep, 1, 0.3)
    by_hand = adapt(policy, by_hand, ep, 1, 0.1, per_task=True)
    by_hand = adapt(policy, by_hand, ep, 1, 0.1, per_task=True)
    for name in params:
        torch.testing.assert_close(by_schedule[name], by_hand[name])
    assert not torch.equal(
        by_schedule["net.out.bias"], adapt(policy, params, ep, 3, 0.3)["net.out.bias"]
    )


def test_meta_learner_trains_and_evaluates_with_its_schedule() -> None:
    policy, fam = _policy_and_family()
    cfg = MetaConfig(
        meta_batch_size=2, episodes_per_task=3, num_evaluation_episodes=3, num_inner_steps=2,
        inner_lr=0.05, inner_step_sizes=(0.2, 0.1), optimizer="adam", lr=0.05, seed=1,
    )  # fmt: skip
    learner = MetaLearner(policy, fam, cfg)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    stats = learner.step()
    assert np.isfinite(stats["meta/loss"])
    assert any(not torch.equal(before[k], v.detach()) for k, v in learner.params.items())

    tasks = fam.sample_tasks(2, "test", np.random.default_rng(5))

    def run(step_sizes: tuple[float, ...] | None) -> dict[int, float]:
        return learner.evaluate_adaptation(
            tasks, (0, 1, 2), generator=torch.Generator().manual_seed(3), step_sizes=step_sizes
        )

    assert run(None) == run((0.2, 0.1))  # the config's schedule is the default
    assert run(None)[2] != run((0.05,))[2]


def test_config_rejects_an_empty_or_negative_schedule() -> None:
    for bad in ((), (0.5, -0.1)):
        with pytest.raises(ValueError, match="inner_step_sizes"):
            MetaConfig(inner_step_sizes=bad)
