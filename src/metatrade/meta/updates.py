"""The meta-update (Finn et al., 2017, Algorithm 3, line 10) behind one small interface.

A ``MetaUpdate`` takes the learner (its meta-parameters, optimizer and ``readapt``) and one
meta-iteration's data (``MetaBatch``) and changes theta in place, returning its log. Three
implementations: Adam on the meta-loss (gradients through the step's own adaptation), TRPO
(the paper's choice: a KL trust region on the post-update policies, re-adapting from each
line-search point), and ProMP (Rothfuss et al., 2019: a clipped objective with a KL penalty,
re-adapting with the low-variance-curvature surrogate for every outer step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from metatrade.meta.episodes import Episodes, random_episode_subset, select_episodes
from metatrade.meta.fisher import ClosedFormFisher, closed_form_supported
from metatrade.meta.inner import TaskLoss, expand_to_tasks
from metatrade.meta.objective import (
    clipped_loss,
    kl_weights,
    mean_kl,
    outer_loss,
    outer_loss_from_dist,
    post_update_dist_params,
)
from metatrade.meta.optimizers import all_finite, clip_grad_norm, trpo_step, warn_skip
from metatrade.meta.surrogates import lvc_loss, ratio_loss

if TYPE_CHECKING:
    from metatrade.meta.learner import MetaLearner

Params = dict[str, Tensor]

KL_LOG_TASKS = 5
"""tasks behind the logged post-update KL of Adam / ProMP (TRPO logs its exact one)"""


@dataclass
class MetaBatch:
    """One meta-iteration's samples and adaptation (Algorithm 3, lines 3-8)."""

    inner_batches: list[Any]
    """the batch of inner step k = 1..K (step 1's is sampled with theta, step k's with
    theta'_{k-1}; the same object K times with ``reuse_inner_batch``)"""
    post: Any
    """post-update episodes D'_i, sampled with theta'_K (exact: the evaluation windows)"""
    steps: list[Params]
    """[theta, theta'_1, ..., theta'_K], each [T, ...], differentiable in theta when the update
    keeps the adaptation's graph"""
    generator: torch.Generator
    """the iteration's generator (TRPO's Fisher subset draws from it)"""
    inner_loss: TaskLoss | None = None
    """the inner loop's per-task loss (None: the config's surrogate)"""
    outer_loss: TaskLoss = ratio_loss
    """the meta-loss's per-task loss on the post-update batch"""

    @property
    def num_tasks(self) -> int:
        return self.post.num_tasks

    @property
    def pre(self) -> Any:
        """The pre-update batch (sampled with theta); the post batch when K = 0."""
        return self.inner_batches[0] if self.inner_batches else self.post

    def sampled_by_adapted(self) -> list[Any]:
        """The batch each adapted policy theta'_1..theta'_K sampled (MAML++'s multi-step loss)."""
        return [*self.inner_batches[1:], self.post]


class MetaUpdate(Protocol):
    keeps_adaptation_graph: bool
    """the step's adaptation is differentiated by this update (so it keeps its graph)"""

    def __call__(self, learner: MetaLearner, batch: MetaBatch) -> dict[str, float]: ...


def meta_loss(
    policy: nn.Module,
    steps: list[Params],
    batch: MetaBatch,
    *,
    multi_step: bool,
    last_dist: Tensor | None = None,
) -> Tensor:
    """The K-step policies' outer loss on the post batch or, with ``multi_step`` and K > 1,
    the mean over k of the k-step policies' loss on the batch they sampled (MAML++).
    ``last_dist``: theta'_K's distribution parameters on the post batch, if computed."""
    if last_dist is None:
        last = outer_loss(policy, steps[-1], batch.post, batch.outer_loss)
    else:
        last = outer_loss_from_dist(policy, last_dist, batch.post)
    if not (multi_step and len(steps) > 2):
        return last
    pairs = zip(steps[1:-1], batch.sampled_by_adapted()[:-1], strict=True)
    earlier = [outer_loss(policy, a, b) for a, b in pairs]
    return (last + sum(earlier)) / (len(steps) - 1)


def apply_gradients(learner: MetaLearner, loss: Tensor, what: str) -> tuple[float, bool]:
    """One optimizer step on ``loss``; skipped (with a warning) if anything is non-finite.
    Returns (gradient norm before clipping, skipped)."""
    leaves = learner.leaves()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)]
    return apply_gradient_values(learner, grads, loss, what)


def apply_gradient_values(
    learner: MetaLearner, grads: list[Tensor], loss: Tensor, what: str
) -> tuple[float, bool]:
    """``apply_gradients`` given the gradients (one per ``learner.leaves()``), e.g. summed
    from per-task contributions by a backend (``meta.pertask``)."""
    leaves = learner.leaves()
    if not all_finite(grads) or not bool(torch.isfinite(loss)):
        norm = float("nan") if not all_finite(grads) else float("inf")
        warn_skip(what, norm)
        return norm, True
    norm = clip_grad_norm(grads, learner.config.max_grad_norm)
    assert learner.optimizer is not None
    learner.optimizer.zero_grad(set_to_none=False)
    for p, g in zip(leaves, grads, strict=True):
        p.grad = g
    learner.optimizer.step()
    return norm, False


def logged_kl(learner: MetaLearner, batch: MetaBatch) -> float:
    """Mean KL(post-update policies before || after) an Adam / ProMP update, for the log.

    Re-adapting every task only for this number would cost about a quarter of an Adam
    iteration, so it is estimated on the first ``KL_LOG_TASKS`` tasks (tasks are i.i.d.).
    """
    k = min(batch.num_tasks, KL_LOG_TASKS)

    def head(ep: Episodes) -> Episodes:
        return Episodes.from_tensors({n: v[:k] for n, v in ep.tensors().items()})

    with torch.no_grad():
        inner = [head(b) for b in batch.inner_batches]
        adapted = learner.readapt(inner, num_tasks=k, second_order=False, loss=batch.inner_loss)[-1]
        return mean_kl(learner.policy, adapted, head(batch.post)).item()


class AdamUpdate:
    """Adam on the meta-loss, differentiating the step's own adaptation (second order)."""

    keeps_adaptation_graph = True

    def __call__(self, learner: MetaLearner, batch: MetaBatch) -> dict[str, float]:
        multi = learner.config.multi_step_loss
        loss = meta_loss(learner.policy, batch.steps, batch, multi_step=multi)
        norm, skipped = apply_gradients(learner, loss, "Adam")
        stats = {"meta/loss": loss.item(), "meta/grad_norm": norm, "meta/skipped": float(skipped)}
        if isinstance(batch.post, Episodes):  # the exact objective has no behaviour policy
            stats["meta/kl"] = logged_kl(learner, batch)
        return stats


class ProMPUpdate:
    """ProMP: ``promp_steps`` Adam steps on J^CLIP (Rothfuss et al., 2019, eq. 11) of the
    policies re-adapted with the lvc surrogate, plus a KL penalty on the pre-update policy."""

    keeps_adaptation_graph = False

    def __call__(self, learner: MetaLearner, batch: MetaBatch) -> dict[str, float]:
        cfg, policy = learner.config, learner.policy
        objective = clipped_loss(cfg.promp_clip)
        first_loss, norm, skipped_any = float("nan"), 0.0, False
        for k in range(cfg.promp_steps):
            adapted = learner.readapt(
                batch.inner_batches,
                num_tasks=batch.num_tasks,
                second_order=not cfg.first_order,
                loss=lvc_loss,
            )[-1]
            loss = outer_loss(policy, adapted, batch.post, objective)
            theta = expand_to_tasks(learner.params, batch.num_tasks)
            total = loss + cfg.promp_kl_coef * mean_kl(policy, theta, batch.pre)
            if k == 0:
                first_loss = loss.item()
            norm, skipped = apply_gradients(learner, total, "ProMP")
            skipped_any |= skipped
        return {
            "meta/loss": first_loss,
            "meta/kl": logged_kl(learner, batch),
            "meta/grad_norm": norm,
            "meta/skipped": float(skipped_any),
        }


KLFn = Callable[[Tensor, Tensor], Tensor]


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
        self.closed_form = closed_form

    def __call__(self, learner: MetaLearner, batch: MetaBatch) -> dict[str, float]:
        cfg, policy = learner.config, learner.policy
        dist, post = policy.distribution, batch.post
        weights = kl_weights(post)
        old = post.dist_params.detach()
        at_theta = [batch.steps]  # the first evaluation reuses the step's adaptation

        def evaluate(*, differentiable: bool) -> tuple[Tensor, Tensor, Tensor]:
            steps = (
                at_theta.pop()
                if at_theta
                else learner.readapt(
                    batch.inner_batches,
                    num_tasks=batch.num_tasks,
                    second_order=differentiable and not cfg.first_order,
                )
            )
            new = post_update_dist_params(policy, steps[-1], post)
            loss = meta_loss(policy, steps, batch, multi_step=cfg.multi_step_loss, last_dist=new)
            return loss, (weights * dist.kl(old, new)).sum(), new

        def kl_fn(p_old: Tensor, p_new: Tensor) -> Tensor:
            return weights * dist.kl(p_old, p_new)

        fisher_kl_fn, fisher_evaluate = kl_fn, None
        fisher_vp = closed_form_fisher(learner, batch) if self.closed_form else None
        if fisher_vp is None and cfg.cg_subsample < 1.0:
            fisher_kl_fn, fisher_evaluate = fisher_on_subset(learner, batch)
        res = trpo_step(
            learner.leaves(),
            evaluate,
            kl_fn=fisher_kl_fn,
            max_kl=cfg.max_kl,
            cg_iters=cfg.cg_iters,
            cg_damping=cfg.cg_damping,
            backtrack_ratio=cfg.ls_backtrack_ratio,
            max_backtracks=cfg.ls_max_steps,
            fisher_evaluate=fisher_evaluate,
            fisher_vp=fisher_vp,
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


def fisher_subsets(cg_subsample: float, batch: MetaBatch) -> tuple[list[Episodes], Episodes]:
    """rllab's ``subsample_factor``: a random fraction of every task's episodes of each
    inner batch and of the post batch, drawn from the iteration's generator (so a resumed
    run draws the same), in the order pre-update, post-update, later inner batches."""
    subsets: dict[int, Episodes] = {}

    def subset(ep: Episodes) -> Episodes:
        if id(ep) not in subsets:  # a reused inner batch is subsampled once
            slots = random_episode_subset(ep, cg_subsample, batch.generator)
            subsets[id(ep)] = select_episodes(ep, slots)
        return subsets[id(ep)]

    if batch.inner_batches:
        subset(batch.inner_batches[0])
    fisher_post = subset(batch.post)
    return [subset(b) for b in batch.inner_batches], fisher_post


def closed_form_fisher(learner: MetaLearner, batch: MetaBatch) -> ClosedFormFisher | None:
    """TRPO's product v -> F v from cached linearisations (``meta.fisher``), on all
    episodes or on ``cg_subsample`` of them (the Hessians of the subset's adaptation, G at
    the full batch's theta', as ``fisher_on_subset``); None where it does not apply."""
    cfg, policy = learner.config, learner.policy
    supported = closed_form_supported(policy, cfg, list(learner.params))
    if not supported or batch.inner_loss is not None or not isinstance(batch.post, Episodes):
        return None
    inner, post, starts = batch.inner_batches, batch.post, batch.steps[:-1]
    if cfg.cg_subsample < 1.0:
        inner, post = fisher_subsets(cfg.cg_subsample, batch)
        with torch.no_grad():
            starts = learner.readapt(inner, num_tasks=batch.num_tasks, second_order=False)[:-1]
    weights = kl_weights(post)

    def kl_fn(p_old: Tensor, p_new: Tensor) -> Tensor:
        return weights * policy.distribution.kl(p_old, p_new)

    theta = {k: v.detach() for k, v in learner.params.items()}
    return ClosedFormFisher(
        policy,
        theta,
        starts=starts,
        inner_batches=inner,
        adapted=batch.steps[-1],
        post=post,
        kl_fn=kl_fn,
        config=cfg,
    )


def fisher_on_subset(learner: MetaLearner, batch: MetaBatch) -> tuple[KLFn, Callable[[], Tensor]]:
    """rllab's ``subsample_factor`` through autograd: the pre-update subset gives the
    adaptation's Jacobian, the post-update one the KL; the Jacobian is taken at the full
    batch's theta' (the subset's theta' shifted onto it)."""
    cfg, policy = learner.config, learner.policy
    fisher_inner, fisher_post = fisher_subsets(cfg.cg_subsample, batch)
    weights = kl_weights(fisher_post)
    at_full = {k: v.detach() for k, v in batch.steps[-1].items()}

    def fisher_kl_fn(p_old: Tensor, p_new: Tensor) -> Tensor:
        return weights * policy.distribution.kl(p_old, p_new)

    def fisher_evaluate() -> Tensor:
        sub = learner.readapt(
            fisher_inner, num_tasks=batch.num_tasks, second_order=not cfg.first_order
        )[-1]
        shifted = {k: v + (at_full[k] - v.detach()) for k, v in sub.items()}
        return post_update_dist_params(policy, shifted, fisher_post)

    return fisher_kl_fn, fisher_evaluate


def make_update(optimizer: str) -> MetaUpdate:
    """The meta-update named by ``MetaConfig.optimizer``."""
    updates: dict[str, type] = {"adam": AdamUpdate, "trpo": TRPOUpdate, "promp": ProMPUpdate}
    return updates[optimizer]()
