"""MetaLearner on a tiny 2D-navigation config: updates, determinism, checkpoint round trip,
NaN-skip, multi-step adaptation and evaluation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.learner import MetaConfig, MetaLearner


def _learner(**overrides) -> MetaLearner:
    fam = Navigation2DFamily(max_episode_steps=10)
    env = fam.make_batch_env(fam.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1)
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8, 8)),
        env.observation_space,
        env.action_space,
        seed=0,
    )
    cfg = dict(meta_batch_size=3, episodes_per_task=4, num_evaluation_episodes=3, lr=0.05, seed=1)
    cfg.update(overrides)
    return MetaLearner(policy, fam, MetaConfig(**cfg))


@pytest.mark.parametrize("optimizer", ["adam", "trpo", "promp"])
def test_step_changes_meta_params_and_reports_namespaced_stats(optimizer: str) -> None:
    learner = _learner(optimizer=optimizer, cg_subsample=0.5 if optimizer == "trpo" else 1.0)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    for _ in range(2):
        stats = learner.step()
    for key in (
        "meta/loss",
        "meta/return_pre",
        "meta/return_post",
        "meta/kl",
        "time/sample_s",
        "time/update_s",
    ):
        assert key in stats and np.isfinite(stats[key]), key
    assert any(not torch.equal(before[k], v.detach()) for k, v in learner.params.items())
    if optimizer == "trpo":
        assert stats["meta/kl"] <= learner.config.max_kl


def test_seeded_runs_are_identical_and_state_dict_round_trips(tmp_path) -> None:
    a, b = _learner(optimizer="adam"), _learner(optimizer="adam")
    sa = [a.step() for _ in range(2)]
    sb = [b.step() for _ in range(2)]
    assert [s["meta/loss"] for s in sa] == [s["meta/loss"] for s in sb]
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    path = tmp_path / "meta.pt"
    torch.save(a.state_dict(), path)
    c = _learner(optimizer="adam")
    c.load_state_dict(torch.load(path, weights_only=True))
    for k in a.params:
        assert torch.equal(a.params[k], c.params[k])
    assert c.iteration == 2
    # resumed optimizer state: the next update is identical
    a.step(np.random.default_rng(5), torch.Generator().manual_seed(5))
    c.step(np.random.default_rng(5), torch.Generator().manual_seed(5))
    for k in a.params:
        assert torch.equal(a.params[k], c.params[k])


class _NaNRewardFamily(Navigation2DFamily):
    def make_batch_env(self, tasks, episodes_per_task):
        env = super().make_batch_env(tasks, episodes_per_task)
        step = env.step

        def nan_step(actions):
            obs, reward, term, trunc, info = step(actions)
            return obs, np.full_like(reward, np.nan), term, trunc, info

        env.step = nan_step
        return env


@pytest.mark.parametrize("optimizer", ["adam", "trpo"])
def test_non_finite_meta_gradient_skips_update_with_warning(optimizer: str) -> None:
    learner = _learner(optimizer=optimizer)
    learner.family = _NaNRewardFamily(max_episode_steps=10)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    with pytest.warns(RuntimeWarning, match="meta-update skipped"):
        stats = learner.step()
    assert stats["meta/skipped"] == 1.0
    for k, v in learner.params.items():
        assert torch.equal(before[k], v.detach())


def test_multi_step_meta_sgd_and_evaluate_adaptation() -> None:
    learner = _learner(optimizer="adam", num_inner_steps=2, learn_inner_lr=True, surrogate="dice")
    lrs_before = {k: v.detach().clone() for k, v in learner.inner_lrs.items()}
    learner.step()
    assert any(not torch.equal(lrs_before[k], v.detach()) for k, v in learner.inner_lrs.items())
    tasks = Navigation2DFamily().sample_tasks(2, task_set="test", rng=np.random.default_rng(9))
    theta = {k: v.detach().clone() for k, v in learner.params.items()}
    returns = learner.evaluate_adaptation(tasks, num_steps_list=(0, 1, 3))
    assert sorted(returns) == [0, 1, 3] and all(np.isfinite(v) for v in returns.values())
    for k in theta:
        assert torch.equal(theta[k], learner.params[k].detach())


def test_meta_sgd_lr_moves_the_step_sizes_at_their_own_rate() -> None:
    """Adam moves each parameter by about its learning rate in its first step: with
    meta_sgd_lr the Meta-SGD step sizes move by that, theta by lr (issue 19: step sizes of
    order 30 did not move at lr 3e-3)."""
    learner = _learner(optimizer="adam", learn_inner_lr=True, lr=1e-3, meta_sgd_lr=0.5)
    theta = {k: v.detach().clone() for k, v in learner.params.items()}
    lrs = {k: v.detach().clone() for k, v in learner.inner_lrs.items()}
    learner.step()
    moved_lr = max(float((v.detach() - lrs[k]).abs().max()) for k, v in learner.inner_lrs.items())
    moved_theta = max(float((v.detach() - theta[k]).abs().max()) for k, v in learner.params.items())
    assert moved_lr == pytest.approx(0.5, rel=0.05) and moved_theta == pytest.approx(1e-3, rel=0.05)
    # a new config keeps the two groups' rates (and a fresh Adam when the grouping changes)
    again = learner.with_config(replace(learner.config, meta_sgd_lr=0.1))
    assert [g["lr"] for g in again.optimizer.param_groups] == [1e-3, 0.1]
    single = learner.with_config(replace(learner.config, meta_sgd_lr=None))
    assert [g["lr"] for g in single.optimizer.param_groups] == [1e-3]
    single.step()


def test_config_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        MetaConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="surrogate"):
        MetaConfig(surrogate="ppo")


def test_evaluate_adaptation_step_sizes_per_step() -> None:
    learner = _learner(optimizer="adam")
    tasks = Navigation2DFamily().sample_tasks(2, task_set="test", rng=np.random.default_rng(9))

    def run(sizes: tuple[float, ...] | None) -> dict[int, float]:
        gen = torch.Generator().manual_seed(3)
        adaptation = None if sizes is None else replace(learner.config, inner_step_sizes=sizes)
        return learner.evaluate_adaptation(
            tasks, num_steps_list=(0, 1, 2), adaptation=adaptation, generator=gen
        )

    default, same = run(None), run((learner.config.inner_lr,))
    assert default == same
    frozen_second = run((learner.config.inner_lr, 0.0))  # step 2 changes nothing
    assert frozen_second[0] == default[0] and frozen_second[1] == default[1]
    assert frozen_second[2] != default[2]

    per_task = learner.evaluate_adaptation_per_task(
        tasks, num_steps_list=(0, 1, 2), generator=torch.Generator().manual_seed(3)
    )
    assert sorted(per_task) == [0, 1, 2]
    for k, values in per_task.items():
        assert values.shape == (2,)
        assert values.mean().item() == pytest.approx(default[k], rel=1e-6)


def test_trpo_step_matches_the_explicit_fisher_through_an_adaptation_step() -> None:
    """trpo_step's Gauss-Newton Fisher products (J^T M J v through the inner gradient step)
    give the step of the explicitly formed Fisher: d = -F^-1 g scaled to KL = max_kl."""
    from torch.autograd.functional import hessian, jacobian

    from metatrade.meta.distributions import DiagGaussian
    from metatrade.meta.optimizers import fisher_product, trpo_step

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(6, generator=gen, dtype=torch.float64)
    actions = torch.randn(6, 1, generator=gen, dtype=torch.float64)
    adv = torch.randn(6, generator=gen, dtype=torch.float64)
    dist, alpha, max_kl, damping = DiagGaussian(1), 0.3, 1e-4, 1e-5
    theta0 = torch.tensor([0.2, -0.4, 0.1, -0.3], dtype=torch.float64)

    def dist_params(theta: torch.Tensor) -> torch.Tensor:
        def inner(t: torch.Tensor) -> torch.Tensor:  # smooth, with a non-trivial Hessian
            return ((torch.tanh(x @ t[:3]) - y) ** 2).mean() + torch.exp(t[3]) ** 2

        adapted = theta - alpha * torch.autograd.grad(inner(theta), theta, create_graph=True)[0]
        mean = torch.tanh(x @ adapted[:3]).unsqueeze(-1)
        return torch.cat([mean, adapted[3].expand(6, 1)], dim=-1)

    old = dist_params(theta0.clone().requires_grad_()).detach()
    old_logp = dist.log_prob(old, actions)

    def kl_fn(p_old: torch.Tensor, p_new: torch.Tensor) -> torch.Tensor:
        return dist.kl(p_old, p_new) / 6

    leaf = theta0.clone().requires_grad_()

    class Problem:  # the TrustRegionProblem a MetaUpdate's Contributions also are
        def __init__(self) -> None:
            self.dist = dist_params(leaf)
            self.product = fisher_product([leaf], self.dist, kl_fn)

        def gradient(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
            loss = -(torch.exp(dist.log_prob(self.dist, actions) - old_logp) * adv).mean()
            return loss, list(torch.autograd.grad(loss, [leaf], retain_graph=True))

        def fisher_product(self, v: torch.Tensor) -> torch.Tensor:
            return self.product(v)

        def loss_and_kl(self) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.enable_grad():  # the inner gradient step needs autograd in the search
                new = dist_params(leaf)
            loss = -(torch.exp(dist.log_prob(new, actions) - old_logp) * adv).mean()
            return loss, kl_fn(old, new).sum()

    res = trpo_step([leaf], Problem(), max_kl=max_kl, cg_iters=4, cg_damping=damping)

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        new = dist_params(theta)
        return -(torch.exp(dist.log_prob(new, actions) - old_logp) * adv).mean()

    t = theta0.clone().requires_grad_()
    g = torch.autograd.grad(loss_of(t), t)[0]
    jac = jacobian(lambda th: dist_params(th).reshape(-1), theta0.clone())  # [12, 4]
    m = hessian(lambda q: kl_fn(old, q.view(6, 2)).sum(), old.reshape(-1).clone())  # [12, 12]
    fisher = jac.T @ m @ jac + damping * torch.eye(4, dtype=torch.float64)
    direction = -torch.linalg.solve(fisher, g)
    step = direction * torch.sqrt(2 * max_kl / (direction @ fisher @ direction))
    assert res.accepted and res.step_fraction > 0
    torch.testing.assert_close(
        leaf.detach() - theta0, res.step_fraction * step, rtol=1e-8, atol=1e-12
    )
