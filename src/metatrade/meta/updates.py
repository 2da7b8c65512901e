"""The meta-update (Finn et al., 2017, Algorithm 3, line 10), one for every backend.

A ``MetaUpdate`` changes the learner's meta-parameters in place from a meta-iteration's
per-task contributions, reduced over tasks (``Contributions``): the meta-loss and its
gradient through the adaptation, Fisher-vector products, the loss and KL at a trial theta,
ProMP's objective and gradient at the current theta. Three implementations: Adam on the
meta-loss, TRPO (the paper's choice: a KL trust region on the post-update policies,
re-adapting from each line-search point) and ProMP (Rothfuss et al., 2019: a clipped
objective with a KL penalty, re-adapting with the low-variance-curvature surrogate for every
outer step).

Who computes the contributions is the backend's business, never the update's:
``meta.contributions.BatchedContributions`` (every task in one vmapped computation: the
``batched`` backend, and each per-task unit on its one task) or
``meta.pertask.TaskContributions`` (per-task units on an executor, ``local`` or ``ray``,
summed in task order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import torch
from torch import Tensor

from metatrade.meta.optimizers import (
    TrustRegionProblem,
    all_finite,
    clip_grad_norm,
    trpo_step,
    warn_skip,
)

if TYPE_CHECKING:
    from metatrade.meta.learner import MetaLearner

KL_LOG_TASKS = 5
"""tasks behind the logged post-update KL of Adam / ProMP (TRPO logs its exact one)"""

FisherKind = Literal["closed_form", "autograd"]


class Contributions(TrustRegionProblem, Protocol):
    """A meta-iteration's per-task contributions, each the mean over its tasks. ``gradient``
    and ``fisher_product`` are taken at the iteration's theta (through the adaptation it
    already ran); the others at the learner's current leaves (after the update moved them),
    re-adapting on the batches the iteration drew."""

    num_tasks: int
    kl_defined: bool
    """the post-update batch has a behaviour policy (sampled episodes) to take a KL against"""

    def promp_gradient(self) -> tuple[Tensor, Tensor, list[Tensor]]:
        """ProMP at the current leaves (Rothfuss et al., 2019, eq. 11): J^CLIP of the policies
        re-adapted with the lvc surrogate, it plus the KL penalty on the pre-update policy,
        and that total's gradient."""
        ...

    def kl_after(self) -> float:
        """KL(post-update policies of the iteration's theta || of the current leaves) on the
        first ``KL_LOG_TASKS`` tasks: Adam's and ProMP's logged KL."""
        ...


class MetaUpdate(Protocol):
    keeps_adaptation_graph: bool
    """the update differentiates the iteration's own adaptation (``Contributions.gradient``)"""
    fisher: FisherKind | None
    """how TRPO's Fisher-vector products are formed (None: the update takes none)"""

    def __call__(self, learner: MetaLearner, contributions: Contributions) -> dict[str, float]: ...


def apply_gradient_values(
    learner: MetaLearner, grads: list[Tensor], loss: Tensor, what: str
) -> tuple[float, bool]:
    """One optimizer step with ``grads`` (one per ``learner.leaves()``); skipped (with a
    warning) if anything is non-finite. Returns (gradient norm before clipping, skipped)."""
    if not all_finite(grads) or not bool(torch.isfinite(loss)):
        norm = float("nan") if not all_finite(grads) else float("inf")
        warn_skip(what, norm)
        return norm, True
    norm = clip_grad_norm(grads, learner.config.max_grad_norm)
    assert learner.optimizer is not None
    learner.optimizer.zero_grad(set_to_none=False)
    for p, g in zip(learner.leaves(), grads, strict=True):
        p.grad = g
    learner.optimizer.step()
    return norm, False


class AdamUpdate:
    """Adam on the meta-loss, differentiating the step's own adaptation (second order)."""

    keeps_adaptation_graph = True
    fisher: FisherKind | None = None

    def __call__(self, learner: MetaLearner, contributions: Contributions) -> dict[str, float]:
        loss, grads = contributions.gradient()
        norm, skipped = apply_gradient_values(learner, grads, loss, "Adam")
        stats = {"meta/loss": loss.item(), "meta/grad_norm": norm, "meta/skipped": float(skipped)}
        if contributions.kl_defined:  # the exact objective has no behaviour policy
            stats["meta/kl"] = contributions.kl_after()
        return stats


class ProMPUpdate:
    """ProMP: ``promp_steps`` Adam steps on J^CLIP (Rothfuss et al., 2019, eq. 11) of the
    policies re-adapted with the lvc surrogate, plus a KL penalty on the pre-update policy."""

    keeps_adaptation_graph = False
    fisher: FisherKind | None = None

    def __call__(self, learner: MetaLearner, contributions: Contributions) -> dict[str, float]:
        first_loss, norm, skipped_any = float("nan"), 0.0, False
        for k in range(learner.config.promp_steps):
            loss, total, grads = contributions.promp_gradient()
            if k == 0:
                first_loss = loss.item()
            norm, skipped = apply_gradient_values(learner, grads, total, "ProMP")
            skipped_any |= skipped
        return {
            "meta/loss": first_loss,
            "meta/kl": contributions.kl_after(),
            "meta/grad_norm": norm,
            "meta/skipped": float(skipped_any),
        }


class TRPOUpdate:
    """TRPO on the meta-loss (Schulman et al., 2015; the MAML paper's meta-optimizer): the
    Fisher of the post-update policies' KL through the adaptation, a line search that
    re-adapts from every trial theta (``optimizers.trpo_step``).

    The Fisher-vector products come from ``meta.fisher.ClosedFormFisher`` where it applies
    (the plain MLP policy, second-order MAML without Meta-SGD rates), else from autograd
    through the adaptation's graph (``optimizers.fisher_product``); the same mathematics.
    ``closed_form=False`` forces the autograd path (the tests compare the two)."""

    keeps_adaptation_graph = True

    def __init__(self, closed_form: bool = True) -> None:
        self.fisher: FisherKind | None = "closed_form" if closed_form else "autograd"

    def __call__(self, learner: MetaLearner, contributions: Contributions) -> dict[str, float]:
        cfg = learner.config
        res = trpo_step(
            learner.leaves(),
            contributions,
            max_kl=cfg.max_kl,
            cg_iters=cfg.cg_iters,
            cg_damping=cfg.cg_damping,
            backtrack_ratio=cfg.ls_backtrack_ratio,
            max_backtracks=cfg.ls_max_steps,
        )
        return {
            "meta/loss": res.loss_before,
            "meta/loss_after": res.loss_after,
            "meta/kl": res.kl_after,
            "meta/grad_norm": res.grad_norm,
            "meta/step_accepted": float(res.accepted),
            "meta/step_fraction": res.step_fraction,
            "meta/skipped": float(res.skipped),
        }


def make_update(optimizer: str) -> MetaUpdate:
    """The meta-update named by ``MetaConfig.optimizer``."""
    updates: dict[str, type] = {"adam": AdamUpdate, "trpo": TRPOUpdate, "promp": ProMPUpdate}
    return updates[optimizer]()
