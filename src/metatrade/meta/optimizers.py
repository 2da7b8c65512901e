"""Meta-optimizer helpers: gradient safety, conjugate gradient and the TRPO step.

TRPO (Schulman et al., 2015) is the MAML paper's meta-optimizer for RL: the search direction
solves F x = -g by conjugate gradient, with F the Hessian of the mean KL between the old
and new *post-update* policies, taken through the adaptation; a backtracking line search
then enforces KL <= max_kl and an improvement of the surrogate.

F v is computed as J^T M J v (exact at the current point, where the KL and its gradient
vanish): J = d(post-update distribution params)/d theta, through ``adapt``; M = the KL's
Hessian in distribution-parameter space (cheap, per sample). J v comes from the
double-backward trick (the VJP is linear in its cotangent u, so grad_u <J^T u, v> = J v),
J^T w from one more VJP; no third-order derivatives are ever formed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


def all_finite(tensors: Sequence[Tensor | None]) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def clip_grad_norm(grads: list[Tensor], max_norm: float | None) -> float:
    """Scale ``grads`` in place so their global L2 norm is <= max_norm; returns the norm before."""
    norm = torch.sqrt(sum(((g.detach() ** 2).sum() for g in grads), torch.zeros(()))).item()
    if max_norm is not None and math.isfinite(norm) and norm > max_norm:
        for g in grads:
            g.mul_(max_norm / (norm + 1e-12))
    return norm


def warn_skip(what: str, norm: float) -> None:
    warnings.warn(
        f"meta-update skipped: non-finite meta-gradient in {what} (norm={norm}); the "
        "meta-parameters are unchanged. Lower the learning rates or check the rewards.",
        RuntimeWarning,
        stacklevel=3,
    )


def conjugate_gradient(
    avp: Callable[[Tensor], Tensor], b: Tensor, *, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x."""
    return conjugate_gradient_with_product(avp, b, iters=iters, residual_tol=residual_tol)[0]


def conjugate_gradient_with_product(
    avp: Callable[[Tensor], Tensor], b: Tensor, *, iters: int = 10, residual_tol: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """``conjugate_gradient`` that also returns A x, accumulated from the products it already
    computed (A x = sum_k alpha_k A p_k, A linear), which saves TRPO one Fisher product."""
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = r.dot(r)
    for _ in range(iters):
        ap = avp(p)
        alpha = rdotr / (p.dot(ap) + 1e-20)
        x = x + alpha * p
        ax = ax + alpha * ap
        r = r - alpha * ap
        new_rdotr = r.dot(r)
        if new_rdotr < residual_tol:
            break
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
    return x, ax


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(flat[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


@dataclass
class TRPOResult:
    accepted: bool
    step_fraction: float  # backtrack factor of the accepted step (0 if none)
    loss_before: float
    loss_after: float
    kl_after: float
    grad_norm: float
    skipped: bool  # non-finite gradient


class TrustRegionProblem(Protocol):
    """What TRPO reads of the objective: at the start point, the loss and its gradient and
    products with the Fisher (the KL's Hessian; no damping); at the current values of the
    leaves (a trial point), the loss and the KL from the start point."""

    def gradient(self) -> tuple[Tensor, list[Tensor]]: ...

    def fisher_product(self, v: Tensor) -> Tensor: ...

    def loss_and_kl(self) -> tuple[Tensor, Tensor]: ...


def trpo_step(
    leaves: list[Tensor],
    problem: TrustRegionProblem,
    *,
    max_kl: float = 0.01,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
) -> TRPOResult:
    """One TRPO update of ``leaves`` (in place, only if a step is accepted): the gradient,
    skipped with a warning if it is not finite, then ``trpo_search`` with the damped Fisher
    ``F v + cg_damping v``."""
    loss, grads = problem.gradient()
    g = flatten(grads)
    grad_norm = g.norm().item()
    if not math.isfinite(grad_norm):
        warn_skip("TRPO", grad_norm)
        return TRPOResult(False, 0.0, loss.item(), loss.item(), 0.0, grad_norm, True)
    return trpo_search(
        leaves,
        g,
        loss.item(),
        lambda v: problem.fisher_product(v) + cg_damping * v,
        problem.loss_and_kl,
        grad_norm=grad_norm,
        max_kl=max_kl,
        cg_iters=cg_iters,
        backtrack_ratio=backtrack_ratio,
        max_backtracks=max_backtracks,
    )


def fisher_product(
    leaves: list[Tensor], dist_params: Tensor, kl_fn: Callable[[Tensor, Tensor], Tensor]
) -> Callable[[Tensor], Tensor]:
    """``v -> J^T M J v`` (flat, no damping) at ``dist_params`` = f(leaves), which must still
    hold its graph. The graphs it builds once (J^T u, the KL's first derivative) are kept, so
    every product after the first costs two backward passes (see the module docstring)."""
    old = dist_params.detach()
    u = torch.zeros_like(dist_params, requires_grad=True)
    jt_u = torch.autograd.grad(dist_params, leaves, u, create_graph=True, materialize_grads=True)

    # M w = d/dq <grad_q KL(old, q), w> at q = old: the first derivative's graph is built once
    q = old.clone().requires_grad_()
    kl_grad_q = torch.autograd.grad(kl_fn(old, q).sum(), q, create_graph=True)[0]

    def product(v: Tensor) -> Tensor:
        jv = torch.autograd.grad(jt_u, u, unflatten(v, leaves), retain_graph=True)[0]
        mw = torch.autograd.grad(kl_grad_q, q, jv.detach(), retain_graph=True)[0]
        jtmw = torch.autograd.grad(
            dist_params, leaves, mw, retain_graph=True, materialize_grads=True
        )
        return flatten(jtmw)

    return product


def trpo_search(
    leaves: list[Tensor],
    g: Tensor,
    loss_before: float,
    fisher_vp: Callable[[Tensor], Tensor],
    evaluate: Callable[[], tuple[Tensor, Tensor]],
    *,
    grad_norm: float,
    max_kl: float,
    cg_iters: int,
    backtrack_ratio: float,
    max_backtracks: int,
) -> TRPOResult:
    """TRPO after the gradient: the direction F x = -g by conjugate gradient (``fisher_vp``
    includes the damping), the step scaled to the trust region, and the backtracking line
    search; ``evaluate()`` gives (loss, kl) at the current values of ``leaves`` (no graph
    needed)."""
    step_dir, f_step = conjugate_gradient_with_product(fisher_vp, -g.detach(), iters=cg_iters)
    shs = 0.5 * step_dir.dot(f_step)
    if not bool(torch.isfinite(shs)) or shs.item() <= 0:
        warn_skip("TRPO (curvature)", float(shs))
        return TRPOResult(False, 0.0, loss_before, loss_before, 0.0, grad_norm, True)
    full_step = step_dir * torch.sqrt(2 * max_kl / (2 * shs))  # = step / sqrt(shs / max_kl)

    originals = [p.detach().clone() for p in leaves]
    fraction = 1.0
    with torch.no_grad():
        for _ in range(max_backtracks):
            for p, p0, s in zip(leaves, originals, unflatten(full_step, leaves), strict=True):
                p.copy_(p0 + fraction * s)
            new_loss, new_kl = evaluate()
            if (
                math.isfinite(new_loss.item())
                and new_loss.item() < loss_before
                and new_kl.item() < max_kl
            ):
                return TRPOResult(
                    True, fraction, loss_before, new_loss.item(), new_kl.item(), grad_norm, False
                )
            fraction *= backtrack_ratio
        for p, p0 in zip(leaves, originals, strict=True):
            p.copy_(p0)
    return TRPOResult(False, 0.0, loss_before, loss_before, 0.0, grad_norm, False)
