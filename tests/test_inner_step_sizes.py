"""Per-step inner step sizes (``MetaConfig.inner_step_sizes``): the MAML
paper's 2D-navigation test schedule (0.5, then 0.25), usable in training too."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from meta_helpers import adapt_on
from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.advantages import compute_advantages
from metatrade.meta.contributions import MetaBatch, meta_loss, replay
from metatrade.meta.episodes import Episodes
from metatrade.meta.estimators import sample_for_inner_loop
from metatrade.meta.inner import expand_to_tasks, task_gradients
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.sampler import sample_episodes
from metatrade.meta.surrogates import vpg_loss


def _policy_and_family() -> tuple[torch.nn.Module, Navigation2DFamily]:
    fam = Navigation2DFamily(max_episode_steps=10)
    env = fam.make_batch_env(fam.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1)
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8, 8)),
        env.observation_space,
        env.action_space,
        seed=0,
    )
    return policy, fam


def test_adapt_takes_each_steps_own_size_and_repeats_the_last() -> None:
    policy, fam = _policy_and_family()
    env = fam.make_batch_env(fam.sample_tasks(2, task_set="train", rng=np.random.default_rng(1)), 3)
    params = {k: v.detach() for k, v in policy.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    ep = compute_advantages(
        sample_episodes(policy, expand_to_tasks(params, 2), env, generator=gen), 0.99, 1.0
    )
    by_schedule = adapt_on(policy, params, ep, num_steps=3, lr=(0.3, 0.1))
    # the same three steps by hand: one vpg gradient step per task, step sizes 0.3, 0.1, 0.1
    by_hand = expand_to_tasks(params, 2)
    for alpha in (0.3, 0.1, 0.1):
        grads = task_gradients(
            lambda p, b: vpg_loss(policy, p, Episodes.from_tensors(b)),
            by_hand,
            ep,
            create_graph=False,
        )
        by_hand = {n: v - alpha * grads[n] for n, v in by_hand.items()}
    for name in params:
        torch.testing.assert_close(by_schedule[name], by_hand[name])
    assert not torch.equal(
        by_schedule["net.out.bias"],
        adapt_on(policy, params, ep, num_steps=3, lr=0.3)["net.out.bias"],
    )


def test_meta_learner_trains_and_evaluates_with_its_schedule() -> None:
    policy, fam = _policy_and_family()
    cfg = MetaConfig(
        meta_batch_size=2,
        episodes_per_task=3,
        num_evaluation_episodes=3,
        num_inner_steps=2,
        inner_lr=0.05,
        inner_step_sizes=(0.2, 0.1),
        optimizer="adam",
        lr=0.05,
        seed=1,
    )
    learner = MetaLearner(policy, fam, cfg)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    stats = learner.step()
    assert np.isfinite(stats["meta/loss"])
    assert any(not torch.equal(before[k], v.detach()) for k, v in learner.params.items())

    tasks = fam.sample_tasks(2, task_set="test", rng=np.random.default_rng(5))

    def run(step_sizes: tuple[float, ...] | None) -> dict[int, float]:
        adaptation = None if step_sizes is None else replace(cfg, inner_step_sizes=step_sizes)
        return learner.evaluate_adaptation(
            tasks,
            num_steps_list=(0, 1, 2),
            adaptation=adaptation,
            generator=torch.Generator().manual_seed(3),
        )

    assert run(None) == run((0.2, 0.1))  # the config's schedule is the default
    assert run(None)[2] != run((0.05,))[2]


def test_config_rejects_an_empty_or_negative_schedule() -> None:
    for bad in ((), (0.5, -0.1)):
        with pytest.raises(ValueError, match="inner_step_sizes"):
            MetaConfig(inner_step_sizes=bad)


def _two_step_learner(optimizer: str, multi: bool) -> MetaLearner:
    policy, fam = _policy_and_family()
    cfg = MetaConfig(
        meta_batch_size=2,
        episodes_per_task=3,
        num_evaluation_episodes=3,
        num_inner_steps=2,
        inner_step_sizes=(0.2, 0.1),
        optimizer=optimizer,
        lr=0.05,
        multi_step_loss=multi,
        seed=1,
    )
    return MetaLearner(policy, fam, cfg)


def test_multi_step_loss_is_the_mean_over_the_adapted_policies_batches() -> None:
    from metatrade.meta.objective import outer_loss

    learner = _two_step_learner("adam", True)
    tasks = learner.family.sample_tasks(2, task_set="train", rng=np.random.default_rng(2))
    env = learner.family.make_batch_env(tasks, 3)
    gen = torch.Generator().manual_seed(4)

    def sample(params: dict[str, torch.Tensor]) -> Episodes:
        detached = {k: v.detach() for k, v in params.items()}
        return sample_for_inner_loop(
            learner.policy, detached, env, config=learner.config, generator=gen
        )

    pre = sample(expand_to_tasks(learner.params, 2))
    first_step = replay(learner, [pre], num_tasks=2, second_order=True)
    mid = sample(first_step[1])
    steps = replay(learner, [pre, mid], num_tasks=2, second_order=True)
    post = sample(steps[2])
    batch = MetaBatch([pre, mid], post, steps, gen)
    first = outer_loss(learner.policy, steps[1], mid)
    last = outer_loss(learner.policy, steps[2], post)
    multi = meta_loss(learner.policy, steps, batch, multi_step=True)
    torch.testing.assert_close(multi, (first + last) / 2)
    torch.testing.assert_close(meta_loss(learner.policy, steps, batch, multi_step=False), last)
    # both terms reach theta: the first step's loss has its own meta-gradient
    g = torch.autograd.grad(first, learner.params["net.out.bias"])[0]
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("optimizer", ["adam", "trpo"])
def test_meta_learner_steps_with_the_multi_step_loss(optimizer: str) -> None:
    learner = _two_step_learner(optimizer, True)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    for _ in range(2):
        stats = learner.step()
        assert np.isfinite(stats["meta/loss"])
    assert any(not torch.equal(before[k], v.detach()) for k, v in learner.params.items())
    if optimizer == "trpo":
        assert stats["meta/kl"] <= learner.config.max_kl


def test_multi_step_loss_rejects_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="multi_step_loss"):
        MetaConfig(num_inner_steps=2, multi_step_loss=True, optimizer="promp")
    with pytest.raises(ValueError, match="multi_step_loss"):
        MetaConfig(num_inner_steps=2, multi_step_loss=True, reuse_inner_batch=True)
