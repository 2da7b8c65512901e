"""TRPO's Fisher-vector product through the inner loop, from cached linearisations.

The Fisher of MAML-TRPO (Finn et al., 2017, sec. 5.3; Schulman et al., 2015) is the Hessian
of the mean KL between the old and new post-update policies, taken with respect to theta
through the adaptation. At the current theta it is exactly F = J^T M J, with J the
Jacobian of the post-update distribution parameters and M the KL's Hessian in
distribution-parameter space. For K inner steps x_k = x_{k-1} - a_k grad L_k(x_{k-1})
(x_0 = theta, per task), J = G D_K ... D_1 with D_k = I - a_k H_k, H_k the Hessian of the
inner loss at x_{k-1} and G the network's Jacobian at x_K on the post-update observations.
H_k is symmetric, so

    J v   = G D_K ... D_1 v          (forward: K Hessian-vector products, one G u)
    J^T w = D_1 ... D_K G^T w        (backward: one G^T w, K Hessian-vector products)

and every Hessian-vector product is H u = A^T (Psi'' (A u)) + (network curvature) with A
the network's Jacobian on the inner batch and Psi'' the loss's Hessian in
distribution-parameter space (small: [T, E, H, P], by autograd once per iteration). Nothing
here depends on the conjugate-gradient direction except the products themselves: the
forward passes, the activations' derivatives and the loss's backward signals are computed
once per meta-iteration (``meta.mlp_linear``), so each of the ten products is a few
matrix products instead of two backward passes through a double-backward graph.

The same mathematics as ``optimizers.fisher_product`` (which remains the path for other
policies, Meta-SGD rates and first-order MAML); the tests compare the two in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from metatrade.meta.config import MetaConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.inner import TaskLoss
from metatrade.meta.mlp_linear import MLPLinearization, mlp_plan
from metatrade.meta.optimizers import flatten, unflatten
from metatrade.meta.surrogates import get_surrogate

Params = dict[str, Tensor]
KLFn = Callable[[Tensor, Tensor], Tensor]


class _GivenOutput(nn.Module):
    """A stand-in policy whose forward returns fixed distribution parameters, so a task
    loss written against a policy (``surrogates``) becomes a function of them."""

    def __init__(self, distribution: Any, output: Tensor) -> None:
        super().__init__()
        self.distribution, self.output = distribution, output

    def forward(self, obs: Tensor) -> Tensor:
        return self.output


class SampleBlockHessian:
    """x -> H x for H the Hessian of a sum of per-sample terms in the distribution parameters
    d [..., P], given the sum's gradient ``grad`` (with its graph) at ``d``.

    Every loss and KL here is a sum over samples of a function of that sample's P
    parameters, so H is block-diagonal with P x P blocks: they are read off P Hessian-vector
    products (one-hot directions) once, and each product is then elementwise. A loss that
    couples samples (DiCE's cumulative log-probabilities) fails the check against autograd
    on a random probe and keeps the autograd product."""

    def __init__(self, grad: Tensor, d: Tensor) -> None:
        self.grad, self.d = grad, d
        self.blocks: Tensor | None = None
        p = d.shape[-1]
        eye = torch.eye(p, dtype=d.dtype)
        columns = [self._autograd(eye[j].expand_as(d)) for j in range(p)]
        blocks = torch.stack(columns, dim=-1)  # [..., i, j] = d2 f / dd_i dd_j
        probe = torch.randn(d.shape, generator=torch.Generator().manual_seed(0), dtype=d.dtype)
        exact = self._autograd(probe)
        tol = 1e-5 if d.dtype == torch.float32 else 1e-12
        if float((_apply(blocks, probe) - exact).norm()) <= tol * float(exact.norm()) + 1e-30:
            self.blocks = blocks

    def _autograd(self, x: Tensor) -> Tensor:
        return torch.autograd.grad(self.grad, self.d, x, retain_graph=True)[0]

    def __call__(self, x: Tensor) -> Tensor:
        return self._autograd(x) if self.blocks is None else _apply(self.blocks, x)


def _apply(blocks: Tensor, x: Tensor) -> Tensor:
    """Per-sample block times vector: [..., P, P] x [..., P] -> [..., P]."""
    return (blocks * x.unsqueeze(-2)).sum(-1)


class DistSpaceLoss:
    """sum_i L_i as a function of the distribution parameters d [T, ...] on a batch: its
    gradient psi' and products with its Hessian Psi'' (``SampleBlockHessian``)."""

    def __init__(self, loss: TaskLoss, distribution: Any, d: Tensor, batch: Any) -> None:
        d = d.detach().requires_grad_()
        batch_type = type(batch)

        def one(di: Tensor, tensors: dict[str, Tensor]) -> Tensor:
            return loss(_GivenOutput(distribution, di), {}, batch_type.from_tensors(tensors))

        with torch.enable_grad():
            losses = vmap(one)(d, batch.tensors())
            self.grad = torch.autograd.grad(losses.sum(), d, create_graph=True)[0]
            self.hvp = SampleBlockHessian(self.grad, d)
        self.d, self.losses = d, losses.detach()


class KLHessian:
    """x -> M x, M the Hessian of sum(kl_fn(old, q)) in q at q = old (TRPO's metric)."""

    def __init__(self, kl_fn: KLFn, old: Tensor) -> None:
        old = old.detach()
        q = old.clone().requires_grad_()
        with torch.enable_grad():
            grad = torch.autograd.grad(kl_fn(old, q).sum(), q, create_graph=True)[0]
            self.product = SampleBlockHessian(grad, q)

    def __call__(self, x: Tensor) -> Tensor:
        return self.product(x)


class InnerStep:
    """One inner step's linearisation: x -> H x, the inner loss's Hessian at the step's
    start on its batch, for every task."""

    def __init__(
        self, policy: nn.Module, plan: Any, start: Params, batch: Any, loss: TaskLoss
    ) -> None:
        self.net = MLPLinearization(plan, start, batch.obs)
        self.loss = DistSpaceLoss(loss, policy.distribution, self.net.output, batch)
        self.net.set_cotangent(self.loss.grad.detach())

    def hvp(self, x: Params) -> Params:
        jx, dhs = self.net.jvp(x)
        return self.net.hessian(x, dhs, self.loss.hvp(jx))


def closed_form_supported(policy: nn.Module, config: MetaConfig, names: Sequence[str]) -> bool:
    """Whether ``ClosedFormFisher`` covers this policy and setting (else the autograd path)."""
    return (
        mlp_plan(policy, list(names)) is not None
        and not config.learn_inner_lr
        and not config.first_order
        and not config.exact_objective
    )


class ClosedFormFisher:
    """v -> J^T M J v (flat over theta, no damping) through K inner steps.

    Args:
        policy: the plain MLP policy (``closed_form_supported``).
        theta: the meta-parameters (no task axis); the flat order of v is theta's.
        starts: x_0 = theta [T, ...] (a broadcast view), x_1, ..., x_{K-1}: where each inner
            step's Hessian is taken (detached values).
        inner_batches: the batch of each inner step.
        adapted: x_K [T, ...], where the post-update Jacobian G is taken.
        post: the post-update batch; ``kl_fn(old, new)`` weights its per-sample KL.
        config: step sizes and the inner surrogate.
        inner_loss: the per-task inner loss (None: ``config.surrogate``).
    """

    def __init__(
        self,
        policy: nn.Module,
        theta: Params,
        *,
        starts: list[Params],
        inner_batches: list[Any],
        adapted: Params,
        post: Episodes,
        kl_fn: KLFn,
        config: MetaConfig,
        inner_loss: TaskLoss | None = None,
    ) -> None:
        plan = mlp_plan(policy, list(theta))
        assert plan is not None, "ClosedFormFisher needs the plain MLP policy"
        loss = inner_loss or get_surrogate(config.surrogate, config.gamma)
        self.theta, self.num_tasks = theta, post.num_tasks
        with torch.no_grad():
            self.steps = [
                InnerStep(policy, plan, _detached(x), b, loss)
                for x, b in zip(starts, inner_batches, strict=True)
            ]
            self.sizes = [config.step_size(k) for k in range(len(self.steps))]
            self.post = MLPLinearization(plan, _detached(adapted), post.obs)
        self.metric = KLHessian(kl_fn, post.dist_params)

    @property
    def dist_params(self) -> Tensor:
        """The post-update distribution parameters at x_K [T, E, H, P]."""
        return self.post.output

    def jacobian_t(self, w: Tensor) -> Tensor:
        """J^T w summed over tasks, flat over theta, for w [T, E, H, P] on the post batch."""
        with torch.no_grad():
            c = self.post.vjp(w)
            for step, size in zip(self.steps[::-1], self.sizes[::-1], strict=True):
                h = step.hvp({k: size * v for k, v in c.items()})
                c = {k: v - h[k] for k, v in c.items()}
            return flatten([c[k].sum(0) for k in self.theta])

    def __call__(self, v: Tensor) -> Tensor:
        with torch.no_grad():
            parts = unflatten(v, list(self.theta.values()))
            x = {
                k: p.expand(self.num_tasks, *p.shape)
                for k, p in zip(self.theta, parts, strict=True)
            }
            for step, size in zip(self.steps, self.sizes, strict=True):
                h = step.hvp(x)
                x = {k: v - size * h[k] for k, v in x.items()}
            jv, _ = self.post.jvp(x)
        return self.jacobian_t(self.metric(jv))


def _detached(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}
