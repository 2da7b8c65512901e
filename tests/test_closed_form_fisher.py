"""TRPO's closed-form Fisher-vector product (``meta.fisher``) is the autograd product
through the adaptation's graph (``optimizers.fisher_product``), in float64: tanh and ReLU
MLPs, one and two inner steps, Gaussian and categorical actions, all surrogates; its J^T is
the meta-gradient's; TRPO steps with it as with autograd; policies it does not cover fall
back to autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data import DataLoader
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.envs.trading import TradingTaskFamily
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.contributions import (
    BatchedContributions,
    MetaBatch,
    adaptation_graph_needed,
    closed_form_fisher,
    meta_loss,
)
from metatrade.meta.fisher import ClosedFormFisher, closed_form_supported
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.mlp_linear import fast_tanh
from metatrade.meta.objective import kl_weights, post_update_dist_params
from metatrade.meta.optimizers import fisher_product, flatten
from metatrade.meta.updates import Contributions, TRPOUpdate

NAV = Navigation2DFamily(max_episode_steps=6)


class _Grab:
    """An update that keeps the meta-iteration's batch (and changes nothing)."""

    keeps_adaptation_graph = True
    fisher = None

    def __call__(self, learner: MetaLearner, contributions: Contributions) -> dict[str, float]:
        self.batch = contributions.batch  # type: ignore[attr-defined]  # the batched backend's
        return {"meta/loss": 0.0}


def _learner(family, activation: str = "tanh", **cfg) -> MetaLearner:
    probe = family.make_batch_env(
        family.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(5, 4), activation=activation),
        probe.observation_space,
        probe.action_space,
        seed=0,
    ).double()
    base = {"meta_batch_size": 3, "episodes_per_task": 3, "num_evaluation_episodes": 3, "seed": 2}
    return MetaLearner(policy, family, MetaConfig(**{**base, **cfg}))


def _batch(learner: MetaLearner) -> MetaBatch:
    grab = learner.update = _Grab()
    learner.step()
    return grab.batch


def _autograd_product(learner: MetaLearner, batch: MetaBatch):
    dist = post_update_dist_params(learner.policy, batch.steps[-1], batch.post)
    w = kl_weights(batch.post)
    return fisher_product(
        learner.leaves(), dist, lambda a, b: w * learner.policy.distribution.kl(a, b)
    )


CASES = {
    "tanh-1-step-vpg": ("tanh", {}),
    "relu-2-steps-multi-loss": (
        "relu",
        {"num_inner_steps": 2, "inner_step_sizes": (0.5, 0.25), "multi_step_loss": True},
    ),
    "tanh-2-steps-lvc-reused-batch": (
        "tanh",
        {"num_inner_steps": 2, "surrogate": "lvc", "reuse_inner_batch": True},
    ),
    "tanh-dice": ("tanh", {"surrogate": "dice"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_closed_form_product_equals_autograd_through_the_adaptation(case: str) -> None:
    activation, cfg = CASES[case]
    learner = _learner(NAV, activation, **cfg)
    batch = _batch(learner)
    fast = closed_form_fisher(learner, batch)
    assert fast is not None
    slow = _autograd_product(learner, batch)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(
            sum(p.numel() for p in learner.leaves()), generator=gen, dtype=torch.float64
        )
        torch.testing.assert_close(fast(v), slow(v), rtol=1e-10, atol=1e-12)


def test_closed_form_product_on_categorical_trading_actions() -> None:
    env_cfg = TradingEnvConfig(lookback=3, episode_length=6, observation="position")
    family = TradingTaskFamily(DataLoader(), env_cfg, period="train", seed=0)
    learner = _learner(family, "tanh")
    batch = _batch(learner)
    fast, slow = closed_form_fisher(learner, batch), _autograd_product(learner, batch)
    assert fast is not None
    v = torch.randn(sum(p.numel() for p in learner.leaves()), dtype=torch.float64)
    torch.testing.assert_close(fast(v), slow(v), rtol=1e-10, atol=1e-12)


def test_its_transpose_gives_the_meta_gradient() -> None:
    """J^T (dL/dd) on the post batch is grad L through the adaptation (one inner step)."""
    learner = _learner(NAV, "tanh")
    batch = _batch(learner)
    fast = closed_form_fisher(learner, batch)
    assert isinstance(fast, ClosedFormFisher)
    d = fast.dist_params.detach().requires_grad_()
    loss = meta_loss(learner.policy, batch.steps, batch, multi_step=False, last_dist=d)
    w = torch.autograd.grad(loss, d)[0]
    loss = meta_loss(learner.policy, batch.steps, batch, multi_step=False)
    grads = torch.autograd.grad(loss, learner.leaves())
    torch.testing.assert_close(fast.jacobian_t(w), flatten(grads), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cg_subsample", [1.0, 0.5])
def test_trpo_steps_alike_with_the_closed_form_and_with_autograd(cg_subsample: float) -> None:
    """Four CG iterations: on this tiny network's nearly singular Fisher, ten amplify the
    products' 1e-13 rounding differences to 1e-4 (both paths alike)."""
    fast = _learner(NAV, "tanh", cg_subsample=cg_subsample, cg_iters=4)
    slow = _learner(NAV, "tanh", cg_subsample=cg_subsample, cg_iters=4)
    slow.update = TRPOUpdate(closed_form=False)
    for _ in range(2):
        a, b = fast.step(), slow.step()
        assert a["meta/step_accepted"] == b["meta/step_accepted"] == 1.0
    for name in fast.params:
        torch.testing.assert_close(fast.params[name], slow.params[name], rtol=1e-8, atol=1e-10)


def test_other_policies_and_meta_sgd_fall_back_to_autograd() -> None:
    learner = _learner(NAV, "tanh", learn_inner_lr=True)
    assert closed_form_fisher(learner, _batch(learner)) is None
    gru_like = nn.Linear(2, 4)  # no fused_layers(): not the plain MLP
    assert not closed_form_supported(gru_like, MetaConfig(), ["weight", "bias"])
    elu = _learner(NAV, "elu")
    assert closed_form_fisher(elu, _batch(elu)) is None


def test_distribution_space_hessians_from_per_sample_blocks_only_when_separable() -> None:
    """vpg's loss and the KL are sums of per-sample terms: their Hessians come from P x P
    blocks; DiCE couples the steps of an episode, fails the probe and keeps autograd (both
    give the autograd product, the tests above)."""
    for surrogate, separable in (("vpg", True), ("dice", False)):
        learner = _learner(NAV, "tanh", surrogate=surrogate)
        fast = closed_form_fisher(learner, _batch(learner))
        assert isinstance(fast, ClosedFormFisher)
        assert (fast.steps[0].loss.hvp.blocks is not None) is separable
        assert fast.metric.product.blocks is not None


@pytest.mark.parametrize(
    ("optimizer", "cfg", "needed"),
    [
        ("trpo", {}, False),  # J^T of the closed form gives the meta-gradient
        ("trpo", {"cg_subsample": 0.5}, True),  # the subset's Jacobian is not the batch's
        ("trpo", {"num_inner_steps": 2, "multi_step_loss": True}, True),
        ("trpo", {"learn_inner_lr": True}, True),
        ("adam", {}, True),
        ("promp", {}, False),
    ],
)
def test_the_adaptation_keeps_its_graph_only_where_something_differentiates_it(
    optimizer: str, cfg: dict, needed: bool
) -> None:
    learner = _learner(NAV, "tanh", optimizer=optimizer, **cfg)
    assert adaptation_graph_needed(learner.update, learner) is needed


def test_a_batch_adapted_without_graph_is_re_adapted_for_an_autograd_gradient() -> None:
    """The fallback: a batch sampled without the adaptation's graph, asked for the gradient
    with no closed form to give it (Adam here), re-adapts from theta with a graph: the same
    gradient as the batch that kept its graph."""
    learner = _learner(NAV, "tanh", optimizer="adam")
    grab = learner.update = _Grab()
    learner.step()
    with_graph = grab.batch
    without = MetaBatch(**{**vars(with_graph), "graph": False})
    without.steps = [{k: v.detach() for k, v in s.items()} for s in with_graph.steps]
    expected = BatchedContributions(learner, with_graph).gradient()
    got = BatchedContributions(learner, without).gradient()
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-14)
    for a, b in zip(got[1], expected[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_tanh_is_torch_tanh_off_the_graph_and_autograd_on_it() -> None:
    z = torch.randn(64, 7, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close(fast_tanh(z), torch.tanh(z), rtol=0, atol=2e-7)
    leaf = z.clone().requires_grad_()
    fast_tanh(leaf).sum().backward()
    assert leaf.grad is not None
    torch.testing.assert_close(leaf.grad, 1 - torch.tanh(z) ** 2)
