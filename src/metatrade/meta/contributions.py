"""A meta-iteration's per-task contributions, computed for every task of a batch at once.

Algorithm 3 of Finn et al. (2017), lines 5-8 (``sample_and_adapt``: inner batches,
adaptation, post-update batch) produce a ``MetaBatch``; ``BatchedContributions`` computes
from it what a meta-update reads (``meta.updates.Contributions``), each the mean over the
batch's tasks in one vmapped computation: the meta-loss and its gradient through the
adaptation, TRPO's Fisher-vector products (``meta.fisher.ClosedFormFisher`` where it
applies, else autograd through the adaptation's graph), the loss and KL at a trial theta,
ProMP's objective and gradient, the logged KL. The ``batched`` backend runs it on the whole
meta-batch; each per-task unit of the ``local`` / ``ray`` backends (``meta.tasks``) runs the
same class on its one task, and the driver sums the units' contributions in task order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from metatrade.meta.adapt import StoredBatches, adapt
from metatrade.meta.config import MetaConfig
from metatrade.meta.distributions import distribution_of
from metatrade.meta.episodes import Episodes, random_episode_subset, select_episodes
from metatrade.meta.estimators import BatchSource
from metatrade.meta.fisher import ClosedFormFisher, closed_form_supported
from metatrade.meta.inner import TaskLoss, expand_to_tasks, gradients
from metatrade.meta.objective import (
    clipped_loss,
    kl_weights,
    mean_kl,
    outer_loss,
    outer_loss_from_dist,
    post_update_dist_params,
)
from metatrade.meta.optimizers import fisher_product, unflatten
from metatrade.meta.surrogates import lvc_loss, ratio_loss
from metatrade.meta.updates import KL_LOG_TASKS, FisherKind, MetaUpdate

Params = dict[str, Tensor]
KLFn = Callable[[Tensor, Tensor], Tensor]


class MetaParameters(Protocol):
    """theta (and the Meta-SGD rates) of a policy under a config: what an iteration adapts
    from and a meta-update changes (``MetaLearner``, or a per-task unit's copy)."""

    policy: nn.Module
    params: Params
    inner_lrs: Params | None
    config: MetaConfig

    def leaves(self) -> list[Tensor]: ...


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
    graph: bool = True
    """``steps`` are differentiable in theta (else re-adapted with a graph if one is needed)"""

    @property
    def num_tasks(self) -> int:
        return int(self.post.num_tasks)

    @property
    def pre(self) -> Any:
        """The pre-update batch (sampled with theta); the post batch when K = 0."""
        return self.inner_batches[0] if self.inner_batches else self.post

    def sampled_by_adapted(self) -> list[Any]:
        """The batch each adapted policy theta'_1..theta'_K sampled (MAML++'s multi-step loss)."""
        return [*self.inner_batches[1:], self.post]


def sample_and_adapt(
    meta: MetaParameters,
    source: BatchSource,
    *,
    num_tasks: int,
    keep_graph: bool,
    generator: torch.Generator,
    losses_out: list[Tensor] | None = None,
) -> MetaBatch:
    """Algorithm 3, lines 5-8: the inner batches D_i (step k's sampled with theta'_{k-1}, or
    the task's adaptation windows), theta'_i = theta - alpha grad L_i, the post-update batch
    D'_i (sampled with theta'_i, or the later evaluation windows). ``keep_graph``: the
    adaptation stays differentiable in theta (second order unless ``first_order``)."""
    cfg = meta.config
    with torch.set_grad_enabled(keep_graph):
        steps = adapt(
            meta.policy,
            expand_to_tasks(meta.params, num_tasks),
            source,
            config=cfg,
            second_order=keep_graph and not cfg.first_order,
            inner_lrs=meta.inner_lrs,
            losses_out=losses_out,
        )
    post = source.post_batch(steps[-1])
    return MetaBatch(
        list(source.batches),
        post,
        steps,
        generator,
        source.inner_loss,
        source.outer_loss,
        graph=keep_graph,
    )


def closed_form_gradient_applies(meta: MetaParameters) -> bool:
    """Whether TRPO's closed-form Jacobian gives the meta-gradient too (``J^T dL/dd``, the
    same number as autograd through the adaptation): the plain MLP, the Fisher on every
    episode (a ``cg_subsample`` Jacobian is the subset's), the loss on the last policy."""
    cfg = meta.config
    return (
        closed_form_supported(meta.policy, cfg, list(meta.params))
        and cfg.cg_subsample >= 1.0
        and not (cfg.multi_step_loss and cfg.num_inner_steps > 1)
    )


def adaptation_graph_needed(update: MetaUpdate, meta: MetaParameters) -> bool:
    """Whether the iteration's adaptation must keep its autograd graph: the update
    differentiates it, and no closed form (``closed_form_gradient_applies``) replaces that.
    Without the graph the adaptation is a plain forward pass (TRPO on 2D navigation: the
    gradient 0.16 -> 0.11 s of a ~1 s iteration)."""
    if not update.keeps_adaptation_graph:
        return False
    return not (update.fisher == "closed_form" and closed_form_gradient_applies(meta))


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


def replay(
    meta: MetaParameters,
    batches: list[Any],
    *,
    num_tasks: int,
    second_order: bool,
    loss: TaskLoss | None = None,
) -> list[Params]:
    """The inner loop from the current theta on stored batches (step k on ``batches[k]``):
    how the line search, ProMP's outer steps and the logged KL re-adapt after theta moved.
    No batches (``num_inner_steps: 0``): theta itself."""
    if not batches:
        return [expand_to_tasks(meta.params, num_tasks)]
    return adapt(
        meta.policy,
        expand_to_tasks(meta.params, num_tasks),
        StoredBatches(batches, loss),
        config=meta.config,
        second_order=second_order,
        inner_lrs=meta.inner_lrs,
        num_steps=len(batches),
    )


class BatchedContributions:
    """``meta.updates.Contributions`` of every task of ``batch`` at once (see the module
    docstring). ``meta`` is read live: the trial points are its current leaves. ``fisher``:
    how Fisher-vector products are formed (None: none will be asked for). ``source`` and
    ``inner_losses``: the batch's source and the inner loop's losses, for the log."""

    def __init__(
        self,
        meta: MetaParameters,
        batch: MetaBatch,
        *,
        fisher: FisherKind | None = None,
        source: BatchSource | None = None,
        inner_losses: list[Tensor] | None = None,
    ) -> None:
        self.meta, self.batch, self.fisher_kind = meta, batch, fisher
        self.source, self.inner_losses = source, inner_losses or []
        self.num_tasks = batch.num_tasks
        self.kl_defined = isinstance(batch.post, Episodes)
        self._product: Callable[[Tensor], Tensor] | None = None

    def _replay(self, batches: list[Any], **kw: Any) -> list[Params]:
        return replay(self.meta, batches, num_tasks=self.num_tasks, **kw)

    def gradient(self) -> tuple[Tensor, list[Tensor]]:
        """L = mean_i L_i(theta'_i) and grad_theta L through the iteration's adaptation; with
        a Fisher to come, its product is prepared first (so a Fisher subset draws from the
        generator before anything else of the update) or kept on the loss's graph."""
        m, batch, cfg = self.meta, self.batch, self.meta.config
        if self.fisher_kind is not None:
            self._product = self._separate_fisher()
        steps = batch.steps
        if not batch.graph:
            if isinstance(self._product, ClosedFormFisher) and closed_form_gradient_applies(m):
                return closed_form_gradient(m, batch, self._product)
            second = not cfg.first_order  # the closed form was expected and does not apply
            steps = self._replay(batch.inner_batches, second_order=second, loss=batch.inner_loss)
        dist = None
        if self.kl_defined:
            dist = post_update_dist_params(m.policy, steps[-1], batch.post)
        multi = cfg.multi_step_loss
        loss = meta_loss(m.policy, steps, batch, multi_step=multi, last_dist=dist)
        on_graph = self.fisher_kind is not None and self._product is None
        grads = gradients(loss, m.leaves(), retain_graph=on_graph)
        if on_graph and dist is not None:
            self._product = fisher_product(m.leaves(), dist, _kl_fn(m.policy, batch.post))
        return loss.detach(), grads

    def _separate_fisher(self) -> Callable[[Tensor], Tensor] | None:
        """The closed form, or autograd on a ``cg_subsample`` of the episodes; None: autograd
        on the loss's own graph."""
        if self.fisher_kind == "closed_form":
            closed = closed_form_fisher(self.meta, self.batch)
            if closed is not None:
                return closed
        if self.meta.config.cg_subsample < 1.0:
            return fisher_on_subset(self.meta, self.batch)
        return None

    def fisher_product(self, v: Tensor) -> Tensor:
        """F v = mean_i J_i^T M_i J_i v (flat over the leaves, no damping)."""
        if self._product is None:
            raise RuntimeError("fisher_product before gradient, or without a Fisher kind")
        return self._product(v)

    def loss_and_kl(self) -> tuple[Tensor, Tensor]:
        """(L, mean KL of the post-update policies) at the current leaves: the line search."""
        m, batch = self.meta, self.batch
        with torch.no_grad():
            steps = self._replay(batch.inner_batches, second_order=False, loss=batch.inner_loss)
            new = post_update_dist_params(m.policy, steps[-1], batch.post)
            multi = m.config.multi_step_loss
            loss = meta_loss(m.policy, steps, batch, multi_step=multi, last_dist=new)
            old = batch.post.dist_params.detach()
            kl = (kl_weights(batch.post) * distribution_of(m.policy).kl(old, new)).sum()
        return loss, kl

    def promp_gradient(self) -> tuple[Tensor, Tensor, list[Tensor]]:
        m, batch, cfg = self.meta, self.batch, self.meta.config
        second = not cfg.first_order
        adapted = self._replay(batch.inner_batches, second_order=second, loss=lvc_loss)[-1]
        loss = outer_loss(m.policy, adapted, batch.post, clipped_loss(cfg.promp_clip))
        theta = expand_to_tasks(m.params, self.num_tasks)
        total = loss + cfg.promp_kl_coef * mean_kl(m.policy, theta, batch.pre)
        return loss.detach(), total.detach(), gradients(total, m.leaves())

    def kl_after(self) -> float:
        """Re-adapting every task only for this number would cost about a quarter of an
        Adam iteration, so it is estimated on the first ``KL_LOG_TASKS`` (tasks are i.i.d.)."""
        k = min(self.num_tasks, KL_LOG_TASKS)
        batch = self.batch
        with torch.no_grad():
            inner = [_head(b, k) for b in batch.inner_batches]
            steps = replay(self.meta, inner, num_tasks=k, second_order=False, loss=batch.inner_loss)
            return mean_kl(self.meta.policy, steps[-1], _head(batch.post, k)).item()

    def returns(self, meta_loss: float | None) -> tuple[float, float]:
        """Mean return before and after adaptation (the log). The exact objective's are read
        off the losses already computed (``meta_loss``: the update's, at theta'), with no
        second forward (~20% of an exact iteration)."""
        assert self.source is not None, "returns() needs the batch's source"
        batch, losses = self.batch, self.inner_losses
        pre_loss = losses[0].mean().item() if losses else None
        pre = self.source.mean_return(batch.pre, batch.steps[0], mean_loss=pre_loss)
        post = self.source.mean_return(batch.post, batch.steps[-1], mean_loss=meta_loss)
        return pre, post

    def log(self, stats: dict[str, float]) -> dict[str, float]:
        pre, post = self.returns(stats["meta/loss"])
        return {"meta/return_pre": pre, "meta/return_post": post}

    def release(self) -> None:
        """Nothing to free: the batch goes when the iteration does."""


def _head(ep: Episodes, k: int) -> Episodes:
    return Episodes.from_tensors({n: v[:k] for n, v in ep.tensors().items()})


def _kl_fn(policy: nn.Module, post: Episodes) -> KLFn:
    weights = kl_weights(post)

    def kl_fn(p_old: Tensor, p_new: Tensor) -> Tensor:
        return weights * distribution_of(policy).kl(p_old, p_new)

    return kl_fn


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


def closed_form_fisher(meta: MetaParameters, batch: MetaBatch) -> ClosedFormFisher | None:
    """TRPO's product v -> F v from cached linearisations (``meta.fisher``), on all
    episodes or on ``cg_subsample`` of them (the Hessians of the subset's adaptation, G at
    the full batch's theta', as ``fisher_on_subset``); None where it does not apply."""
    cfg, policy = meta.config, meta.policy
    supported = closed_form_supported(policy, cfg, list(meta.params))
    if not supported or batch.inner_loss is not None or not isinstance(batch.post, Episodes):
        return None
    inner, post, starts = batch.inner_batches, batch.post, batch.steps[:-1]
    if cfg.cg_subsample < 1.0:
        inner, post = fisher_subsets(cfg.cg_subsample, batch)
        with torch.no_grad():
            starts = replay(meta, inner, num_tasks=batch.num_tasks, second_order=False)[:-1]
    theta = {k: v.detach() for k, v in meta.params.items()}
    return ClosedFormFisher(
        policy,
        theta,
        starts=starts,
        inner_batches=inner,
        adapted=batch.steps[-1],
        post=post,
        kl_fn=_kl_fn(policy, post),
        config=cfg,
    )


def closed_form_gradient(
    meta: MetaParameters, batch: MetaBatch, closed: ClosedFormFisher
) -> tuple[Tensor, list[Tensor]]:
    """(L, grad_theta L) with grad_theta L = J^T dL/dd: the meta-loss's gradient in the
    post-update distribution parameters d, pulled back through the adaptation by the
    closed form's Jacobian (Finn et al., 2017, eq. 1 differentiated; no autograd graph
    through the inner loop)."""
    with torch.enable_grad():
        d = closed.dist_params.detach().requires_grad_()
        loss = meta_loss(meta.policy, batch.steps, batch, multi_step=False, last_dist=d)
        w = torch.autograd.grad(loss, d)[0]
    return loss.detach(), unflatten(closed.jacobian_t(w), meta.leaves())


def fisher_on_subset(meta: MetaParameters, batch: MetaBatch) -> Callable[[Tensor], Tensor]:
    """rllab's ``subsample_factor`` through autograd: the pre-update subset gives the
    adaptation's Jacobian, the post-update one the KL; the Jacobian is taken at the full
    batch's theta' (the subset's theta' shifted onto it)."""
    cfg, policy = meta.config, meta.policy
    fisher_inner, fisher_post = fisher_subsets(cfg.cg_subsample, batch)
    at_full = {k: v.detach() for k, v in batch.steps[-1].items()}
    second = not cfg.first_order
    sub = replay(meta, fisher_inner, num_tasks=batch.num_tasks, second_order=second)[-1]
    shifted = {k: v + (at_full[k] - v.detach()) for k, v in sub.items()}
    dist = post_update_dist_params(policy, shifted, fisher_post)
    return fisher_product(meta.leaves(), dist, _kl_fn(policy, fisher_post))
