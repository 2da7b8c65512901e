"""Per-task meta-iteration units (meta.tasks, meta.pertask) without Ray: their summed
contributions are the batched meta-gradient and Fisher product on the same batches; the
task streams depend on (seed, iteration, index) only; the local backend is reproducible and
moves theta (Adam, TRPO, ProMP, Meta-SGD, the exact estimator); bad seeds and unknown
backends are refused clearly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from metatrade.agents.policies import make_policy
from metatrade.data import DataLoader
from metatrade.distributed import attach, make_executor
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.envs.trading import TradingTaskFamily
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.inner import expand_to_tasks, inner_loop
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.objective import (
    clipped_loss,
    kl_weights,
    mean_kl,
    outer_loss,
    post_update_dist_params,
)
from metatrade.meta.optimizers import fisher_product, flatten
from metatrade.meta.pertask import ordered_sum
from metatrade.meta.surrogates import lvc_loss
from metatrade.meta.tasks import IterationSpec, TaskWorker, task_streams, to_arrays
from metatrade.meta.updates import MetaBatch, meta_loss

FAMILY = Navigation2DFamily(max_episode_steps=8)


def nav_policy() -> torch.nn.Module:
    env = FAMILY.make_batch_env(
        FAMILY.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    return make_policy("mlp", env.observation_space, env.action_space, seed=0, hidden_sizes=(8,))


def config(**kw) -> MetaConfig:
    base = {"meta_batch_size": 3, "episodes_per_task": 3, "num_evaluation_episodes": 3}
    return MetaConfig(**{**base, **kw})


def stack(batches: list[Episodes]) -> Episodes:
    fields = [b.tensors() for b in batches]
    return Episodes.from_tensors({k: torch.cat([f[k] for f in fields]) for k in fields[0]})


def test_task_contributions_sum_to_the_batched_gradient_and_fisher_product() -> None:
    policy, cfg = nav_policy(), config(optimizer="trpo")
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    tasks = FAMILY.sample_tasks(3, task_set="train", rng=np.random.default_rng(1))
    spec = IterationSpec("t", 0, tuple(tasks), to_arrays(params), None, cfg)
    worker = TaskWorker(policy, FAMILY)
    results = worker.begin(spec, [0, 1, 2])
    units = [worker.units[i] for i in range(3)]
    pre = stack([u.batch.inner_batches[0] for u in units])
    post = stack([u.batch.post for u in units])
    steps = inner_loop(
        policy, expand_to_tasks(params, 3), lambda k, c: pre, config=cfg, second_order=True
    )
    batch = MetaBatch([pre], post, steps, torch.Generator())
    dist = post_update_dist_params(policy, steps[-1], post)
    loss = meta_loss(policy, steps, batch, multi_step=False, last_dist=dist)
    leaves = list(params.values())
    grad = flatten(torch.autograd.grad(loss, leaves, retain_graph=True))
    summed = ordered_sum([r.grad for r in results]) / 3
    torch.testing.assert_close(summed, grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ordered_sum([r.loss for r in results]) / 3, loss.detach())

    weights = kl_weights(post)
    fvp = fisher_product(leaves, dist, lambda p, q: weights * policy.distribution.kl(p, q))
    v = torch.randn(grad.shape, generator=torch.Generator().manual_seed(0))
    per_task = ordered_sum(worker.fisher(spec, [0, 1, 2], v.numpy())) / 3
    torch.testing.assert_close(per_task, fvp(v), rtol=1e-4, atol=1e-7)


def test_task_promp_contributions_sum_to_the_batched_promp_gradient() -> None:
    policy, cfg = nav_policy(), config(optimizer="promp")
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    tasks = FAMILY.sample_tasks(3, task_set="train", rng=np.random.default_rng(2))
    spec = IterationSpec("p", 0, tuple(tasks), to_arrays(params), None, cfg)
    worker = TaskWorker(policy, FAMILY)
    outs = worker.promp(spec, [0, 1, 2], spec.theta, None)
    pre = stack([worker.units[i].batch.inner_batches[0] for i in range(3)])
    post = stack([worker.units[i].batch.post for i in range(3)])
    adapted = inner_loop(
        policy,
        expand_to_tasks(params, 3),
        lambda k, c: pre,
        config=cfg,
        second_order=True,
        loss=lvc_loss,
    )[-1]
    loss = outer_loss(policy, adapted, post, clipped_loss(cfg.promp_clip))
    total = loss + cfg.promp_kl_coef * mean_kl(policy, expand_to_tasks(params, 3), pre)
    grad = flatten(torch.autograd.grad(total, list(params.values())))
    torch.testing.assert_close(ordered_sum([o[2] for o in outs]) / 3, grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ordered_sum([o[0] for o in outs]) / 3, loss.detach())


def test_task_streams_depend_on_seed_iteration_and_index_only() -> None:
    draw = [torch.rand(3, generator=task_streams(5, 2, 1)[0]) for _ in range(2)]
    assert torch.equal(draw[0], draw[1])
    others = [task_streams(5, 2, 2), task_streams(5, 3, 1), task_streams(6, 2, 1)]
    assert all(not torch.equal(draw[0], torch.rand(3, generator=g)) for g, _ in others)
    with pytest.raises(ValueError, match="must all be >= 0"):
        task_streams(-1, 0, 0)


def run_local(optimizer: str, iterations: int = 2) -> dict[str, torch.Tensor]:
    policy = nav_policy()
    learner = MetaLearner(policy, FAMILY, config(optimizer=optimizer, lr=0.05))
    attach(learner, make_executor("local", copy.deepcopy(policy), FAMILY))
    for _ in range(iterations):
        stats = learner.step()
    assert stats["meta/iteration"] == iterations and np.isfinite(stats["meta/loss"])
    return {k: v.detach().clone() for k, v in learner.params.items()}


@pytest.mark.parametrize("optimizer", ["adam", "trpo", "promp"])
def test_local_backend_is_reproducible_and_moves_theta(optimizer: str) -> None:
    first, second = run_local(optimizer), run_local(optimizer)
    assert all(torch.equal(first[k], second[k]) for k in first)
    start = dict(nav_policy().named_parameters())
    assert any(not torch.equal(first[k], start[k].detach()) for k in first)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of batched, local, ray"):
        make_executor("dask", nav_policy(), FAMILY)


def test_trpo_with_meta_sgd_fisher_subset_and_two_inner_steps_is_reproducible() -> None:
    def run() -> MetaLearner:
        policy = nav_policy()
        cfg = config(optimizer="trpo", learn_inner_lr=True, cg_subsample=0.5, num_inner_steps=2)
        learner = MetaLearner(policy, FAMILY, cfg)
        attach(learner, make_executor("local", copy.deepcopy(policy), FAMILY))
        learner.step()
        return learner

    a, b = run(), run()
    assert a.inner_lrs is not None and b.inner_lrs is not None
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name])
        assert torch.equal(a.inner_lrs[name], b.inner_lrs[name])


def test_exact_estimator_runs_per_task_on_trading_windows() -> None:
    env_cfg = TradingEnvConfig(lookback=4, episode_length=16, observation="position")
    family = TradingTaskFamily(DataLoader(), env_cfg, period="train", seed=0)
    probe = family.make_batch_env(
        family.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    policy = make_policy(
        "mlp", probe.observation_space, probe.action_space, hidden_sizes=(8,), seed=0
    )
    cfg = MetaConfig(
        estimator="exact",
        optimizer="adam",
        lr=1e-2,
        inner_lr=0.5,
        meta_batch_size=3,
        episodes_per_task=2,
        num_evaluation_episodes=2,
    )
    learner = MetaLearner(policy, family, cfg)
    attach(learner, make_executor("local", copy.deepcopy(policy), family))
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    stats = learner.step()
    # the post-update return is minus the meta-loss: the same windows and parameters
    assert stats["meta/return_post"] == pytest.approx(-stats["meta/loss"], rel=1e-5)
    assert "meta/kl" not in stats and stats["meta/skipped"] == 0.0
    assert any(not torch.equal(before[k], v.detach()) for k, v in learner.params.items())
