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
    """
    loss, _, dist_params = evaluate(differentiable=True)
    # with a separate Fisher subset the full graph is not needed again: free it now
    grads = torch.autograd.grad(
        loss, leaves, retain_graph=fisher_evaluate is None, allow_unused=True
    )
    g = flatten(_zeros_for_none(leaves, grads))
    grad_norm = g.norm().item()
    if not math.isfinite(grad_norm):
        warn_skip("TRPO", grad_norm)
        return TRPOResult(False, 0.0, loss.item(), loss.item(), 0.0, grad_norm, True)
    if fisher_evaluate is not None:
        dist_params = fisher_evaluate()
    fisher_vp = fisher_vector_product(leaves, dist_params, kl_fn=kl_fn, damping=cg_damping)
    step_dir, f_step = conjugate_gradient_with_product(fisher_vp, -g.detach(), iters=cg_iters)
    shs = 0.5 * step_dir.dot(f_step)
    if not bool(torch.isfinite(shs)) or shs.item() <= 0:
        warn_skip("TRPO (curvature)", float(shs))
        return TRPOResult(False, 0.0, loss.item(), loss.item(), 0.0, grad_norm, True)
    full_step = step_dir * torch.sqrt(2 * max_kl / (2 * shs))  # = step / sqrt(shs / max_kl)
    return _line_search(
        leaves,
        evaluate,
        full_step=full_step,
        loss_before=loss.item(),
        max_kl=max_kl,
        backtrack_ratio=backtrack_ratio,
        max_backtracks=max_backtracks,
        grad_norm=grad_norm,
    )


def _zeros_for_none(leaves: Sequence[Tensor], grads: Sequence[Tensor | None]) -> list[Tensor]:
    return [torch.zeros_like(p) if t is None else t for p, t in zip(leaves, grads, strict=True)]


def fisher_vector_product(
    leaves: list[Tensor],
    dist_params: Tensor,
    *,
    kl_fn: Callable[[Tensor, Tensor], Tensor],
    damping: float,
) -> Callable[[Tensor], Tensor]:
    """v -> (J^T M J + damping I) v with J = d dist_params / d leaves (through the
    adaptation) and M the KL's Hessian in distribution-parameter space at the old policy.
    J v by the double-backward trick (the VJP is linear in its cotangent u), J^T w by a VJP;
    the graphs are built once and reused by every product of the conjugate gradient."""
    old = dist_params.detach()
    u = torch.zeros_like(dist_params, requires_grad=True)
    jt_u = torch.autograd.grad(dist_params, leaves, u, create_graph=True, allow_unused=True)
    jt_u = _zeros_for_none(leaves, jt_u)
    # M w = d/dq <grad_q KL(old, q), w> at q = old: the first derivative's graph is built once
    q = old.clone().requires_grad_()
    kl_grad_q = torch.autograd.grad(kl_fn(old, q).sum(), q, create_graph=True)[0]

    def product(v: Tensor) -> Tensor:
        jv = torch.autograd.grad(jt_u, u, unflatten(v, leaves), retain_graph=True)[0]
        mw = torch.autograd.grad(kl_grad_q, q, jv.detach(), retain_graph=True)[0]
        jtmw = torch.autograd.grad(dist_params, leaves, mw, retain_graph=True, allow_unused=True)
        return flatten(_zeros_for_none(leaves, jtmw)) + damping * v

    return product


def _line_search(
    leaves: list[Tensor],
    evaluate: Callable[..., tuple[Tensor, Tensor, Tensor]],
    *,
    full_step: Tensor,
    loss_before: float,
    max_kl: float,
    backtrack_ratio: float,
    max_backtracks: int,
    grad_norm: float,
) -> TRPOResult:
    """Backtrack from ``full_step`` until the loss improves with KL < max_kl (Schulman et
    al., 2015, appendix C); the leaves are restored when no fraction is accepted."""
    originals = [p.detach().clone() for p in leaves]
    fraction = 1.0
    with torch.no_grad():
        for _ in range(max_backtracks):
            for p, p0, s in zip(leaves, originals, unflatten(full_step, leaves), strict=True):
                p.copy_(p0 + fraction * s)
            new_loss, new_kl, _ = evaluate(differentiable=False)
            loss_now, kl_now = new_loss.item(), new_kl.item()
            if math.isfinite(loss_now) and loss_now < loss_before and kl_now < max_kl:
                return TRPOResult(True, fraction, loss_before, loss_now, kl_now, grad_norm, False)
            fraction *= backtrack_ratio
        for p, p0 in zip(leaves, originals, strict=True):
            p.copy_(p0)
    return TRPOResult(False, 0.0, loss_before, loss_before, 0.0, grad_norm, False)
