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

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data import DataLoader
from metatrade.distributed import attach, make_executor
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.envs.trading import TradingTaskFamily
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.contributions import BatchedContributions, MetaBatch, replay
from metatrade.meta.episodes import Episodes
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.optimizers import flatten
from metatrade.meta.pertask import ordered_sum
from metatrade.meta.tasks import IterationSpec, TaskWorker, task_streams, to_arrays

FAMILY = Navigation2DFamily(max_episode_steps=8)


def nav_policy() -> torch.nn.Module:
    env = FAMILY.make_batch_env(
        FAMILY.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    return make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)),
        env.observation_space,
        env.action_space,
        seed=0,
    )


def config(**kw) -> MetaConfig:
    base = {"meta_batch_size": 3, "episodes_per_task": 3, "num_evaluation_episodes": 3}
    return MetaConfig(**{**base, **kw})


def stack(batches: list[Episodes]) -> Episodes:
    fields = [b.tensors() for b in batches]
    return Episodes.from_tensors({k: torch.cat([f[k] for f in fields]) for k in fields[0]})


def _units_and_batched(cfg: MetaConfig, seed: int):
    """A worker's three units, and the batched contributions (the ``batched`` backend's
    class) on their batches stacked into one meta-batch, at the same theta."""
    policy = nav_policy()
    learner = MetaLearner(policy, FAMILY, cfg)
    tasks = FAMILY.sample_tasks(3, task_set="train", rng=np.random.default_rng(seed))
    spec = IterationSpec("t", 0, tuple(tasks), to_arrays(learner.params), None, cfg)
    worker = TaskWorker(policy, FAMILY)
    results = worker.call("begin", spec, [0, 1, 2])
    units = [worker.units[i].contributions.batch for i in range(3)]
    pre = stack([u.inner_batches[0] for u in units])
    post = stack([u.post for u in units])
    with torch.set_grad_enabled(cfg.optimizer != "promp"):
        steps = replay(learner, [pre], num_tasks=3, second_order=True)
    batch = MetaBatch([pre], post, steps, torch.Generator())
    fisher = "autograd" if cfg.optimizer == "trpo" else None
    return spec, worker, results, BatchedContributions(learner, batch, fisher=fisher)


def test_task_contributions_sum_to_the_batched_gradient_and_fisher_product() -> None:
    spec, worker, results, batched = _units_and_batched(config(optimizer="trpo"), 1)
    loss, grads = batched.gradient()
    torch.testing.assert_close(ordered_sum([r.grad for r in results]) / 3, flatten(grads))
    torch.testing.assert_close(ordered_sum([r.loss for r in results]) / 3, loss)
    v = torch.randn(flatten(grads).shape, generator=torch.Generator().manual_seed(0))
    per_task = ordered_sum(worker.call("fisher", spec, [0, 1, 2], v.numpy())) / 3
    torch.testing.assert_close(per_task, batched.fisher_product(v), rtol=1e-4, atol=1e-7)
    # the line search's (L, KL) at the iteration's theta: the loss above, a zero KL
    pairs = worker.call("loss_and_kl", spec, [0, 1, 2], spec.theta, None)
    torch.testing.assert_close(ordered_sum([p[0] for p in pairs]) / 3, loss)
    assert ordered_sum([p[1] for p in pairs]).abs().item() < 1e-12


def test_task_promp_contributions_sum_to_the_batched_promp_gradient() -> None:
    spec, worker, _, batched = _units_and_batched(config(optimizer="promp"), 2)
    outs = worker.call("promp_gradient", spec, [0, 1, 2], spec.theta, None)
    loss, total, grads = batched.promp_gradient()
    torch.testing.assert_close(ordered_sum([o[2] for o in outs]) / 3, flatten(grads))
    torch.testing.assert_close(ordered_sum([o[0] for o in outs]) / 3, loss)
    torch.testing.assert_close(ordered_sum([o[1] for o in outs]) / 3, total)
    with pytest.raises(ValueError, match="unknown method"):
        worker.call("step", spec, [0], spec.theta, None)


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
        NetworkConfig(kind="mlp", hidden_sizes=(8,)),
        probe.observation_space,
        probe.action_space,
        seed=0,
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
