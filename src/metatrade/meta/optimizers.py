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

import torch
from torch import Tensor


def all_finite(tensors: Sequence[Tensor | None]) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def clip_grad_norm(grads: list[Tensor], max_norm: float | None) -> float:
    """Scale ``grads`` in place so their global L2 norm is <= max_norm; returns the norm before."""
    norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads)).item()
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


def trpo_step(
    leaves: list[Tensor],
    evaluate: Callable[..., tuple[Tensor, Tensor, Tensor]],
    *,
    kl_fn: Callable[[Tensor, Tensor], Tensor],
    max_kl: float = 0.01,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
    fisher_evaluate: Callable[[], Tensor] | None = None,
    fisher_vp: Callable[[Tensor], Tensor] | None = None,
) -> TRPOResult:
    """One TRPO update of ``leaves`` (in place, only if a step is accepted).

    ``evaluate(differentiable=...)`` recomputes, from the current values of ``leaves``
    (which require grad): (loss, kl, dist_params) where dist_params are the post-update
    distribution parameters and ``kl_fn(old, new)`` weights the per-sample KL so that its sum
    is the mean KL; ``differentiable=False`` (the line search, under ``no_grad``) needs no
    graph through the adaptation.
    ``fisher_evaluate()`` (optional) returns the post-update distribution parameters of a
    subset of the data, with ``kl_fn`` weighting them accordingly, for a cheaper Fisher
    (rllab's ``subsample_factor``); the gradient and the line search always use all data.
    ``fisher_vp`` (optional): the product v -> F v already built (``meta.fisher``); then
    neither ``kl_fn`` nor the graph of the distribution parameters is used.
    """
    loss, _, dist_params = evaluate(differentiable=True)
    # with a separate Fisher subset or product the graph is not needed again: free it now
    keep = fisher_evaluate is None and fisher_vp is None
    grads = torch.autograd.grad(loss, leaves, retain_graph=keep, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)]
    g = flatten(grads)
    grad_norm = g.norm().item()
    if not math.isfinite(grad_norm):
        warn_skip("TRPO", grad_norm)
        return TRPOResult(False, 0.0, loss.item(), loss.item(), 0.0, grad_norm, True)

    if fisher_vp is not None:
        fisher = fisher_vp
    else:
        if fisher_evaluate is not None:
            dist_params = fisher_evaluate()
        fisher = fisher_product(leaves, dist_params, kl_fn)

    def line_search_eval() -> tuple[Tensor, Tensor]:
        new_loss, new_kl, _ = evaluate(differentiable=False)
        return new_loss, new_kl

    return trpo_search(
        leaves,
        g,
        loss.item(),
        lambda v: fisher(v) + cg_damping * v,
        line_search_eval,
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
    jt_u = torch.autograd.grad(dist_params, leaves, u, create_graph=True, allow_unused=True)
    jt_u = [torch.zeros_like(p) if t is None else t for p, t in zip(leaves, jt_u, strict=True)]

    # M w = d/dq <grad_q KL(old, q), w> at q = old: the first derivative's graph is built once
    q = old.clone().requires_grad_()
    kl_grad_q = torch.autograd.grad(kl_fn(old, q).sum(), q, create_graph=True)[0]

    def product(v: Tensor) -> Tensor:
        jv = torch.autograd.grad(jt_u, u, unflatten(v, leaves), retain_graph=True)[0]
        mw = torch.autograd.grad(kl_grad_q, q, jv.detach(), retain_graph=True)[0]
        jtmw = torch.autograd.grad(dist_params, leaves, mw, retain_graph=True, allow_unused=True)
        jtmw = [torch.zeros_like(p) if t is None else t for p, t in zip(leaves, jtmw, strict=True)]
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
    needed). Shared by ``trpo_step`` and the per-task backends, whose products and
    evaluations are sums over tasks computed elsewhere."""
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
