"""One task's share of a meta-iteration, computable anywhere: in-process or on a Ray actor.

A meta-iteration of MAML (Finn et al., 2017, Algorithm 3) is per-task work plus a sum:
task i's batch D_i (sampled episodes or exact windows), its inner loop theta'_i, its
post-update batch D'_i and its contributions to the meta-update (Adam: grad L_i; TRPO:
grad L_i, the Fisher-vector products J_i^T M_i J_i v and the line search's L_i and KL_i at
trial thetas) depend on theta and on task i only. ``TaskUnit`` computes them for one task
from an ``IterationSpec`` (theta, the task list, the config: small and picklable);
``TaskWorker`` holds the policy and the task family (its data loaded once) and serves any
subset of an iteration's tasks. ``meta.pertask`` sums the contributions in task-index order.

Determinism by construction: task i's random streams are seeded from (seed, iteration, i)
only (``task_streams``), so a unit gives the same numbers whichever process runs it, and a
unit rebuilt after its worker died (``TaskWorker`` recomputes a missing unit from the spec)
gives bitwise the same contributions as the lost one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metatrade.meta.config import MetaConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.estimators import BatchSource, ExactSource, SampledSource
from metatrade.meta.fisher import closed_form_supported
from metatrade.meta.inner import expand_to_tasks, inner_loop
from metatrade.meta.learner import MetaLearner
from metatrade.meta.objective import (
    clipped_loss,
    kl_weights,
    mean_kl,
    outer_loss,
    post_update_dist_params,
)
from metatrade.meta.optimizers import fisher_product, flatten
from metatrade.meta.protocols import TaskFamily
from metatrade.meta.surrogates import lvc_loss
from metatrade.meta.updates import MetaBatch, closed_form_fisher, fisher_on_subset, meta_loss

Params = dict[str, Tensor]
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class IterationSpec:
    """Everything a worker needs from the driver for one meta-iteration (Algorithm 3, lines
    3-8): the sampled tasks, theta (and Meta-SGD rates) at the iteration's start, the config."""

    run_id: str
    """tells two runs sharing workers apart"""
    iteration: int
    tasks: tuple[Any, ...]
    theta: Arrays
    inner_lrs: Arrays | None
    config: MetaConfig

    @property
    def key(self) -> tuple[str, int]:
        return (self.run_id, self.iteration)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)


@dataclass(frozen=True)
class TaskResult:
    """Task i's first contribution: its meta-loss L_i, grad L_i (flat, over theta then the
    Meta-SGD rates) and the mean returns before and after adaptation (for the log)."""

    loss: np.ndarray
    grad: np.ndarray
    return_pre: float
    return_post: float


def task_streams(
    seed: int, iteration: int, index: int
) -> tuple[torch.Generator, np.random.Generator]:
    """Task ``index``'s torch and numpy generators in meta-iteration ``iteration``: a
    function of (seed, iteration, index) only (numpy's SeedSequence mixes them; no hash)."""
    if min(seed, iteration, index) < 0:
        raise ValueError(
            f"task_streams: seed={seed}, iteration={iteration}, index={index} must all be >= 0 "
            "(run.seed is a non-negative integer)."
        )
    torch_seed, numpy_seed = np.random.SeedSequence([seed, iteration, index]).generate_state(
        2, dtype=np.uint64
    )
    return torch.Generator().manual_seed(int(torch_seed)), np.random.default_rng(int(numpy_seed))


def to_arrays(params: Params) -> Arrays:
    """Detached CPU copies as numpy arrays: what travels between driver and workers."""
    return {k: v.detach().cpu().numpy().copy() for k, v in params.items()}


def _tensors(arrays: Arrays | None, *, requires_grad: bool) -> Params | None:
    if arrays is None:
        return None
    return {
        k: torch.from_numpy(np.array(v)).requires_grad_(requires_grad) for k, v in arrays.items()
    }


class TaskUnit:
    """Task ``index`` of ``spec``: its batches and adaptation, and its contributions."""

    def __init__(self, policy: nn.Module, family: TaskFamily, spec: IterationSpec, index: int):
        cfg = self.config = spec.config
        self.policy = policy
        generator, rng = task_streams(cfg.seed, spec.iteration, index)
        task = [spec.tasks[index]]
        source: BatchSource
        if cfg.estimator == "exact":
            source = ExactSource(policy, family, task, config=cfg, rng=rng)
        else:
            source = SampledSource(policy, family, task, config=cfg, generator=generator)
        self.params = _tensors(spec.theta, requires_grad=True) or {}
        self.inner_lrs = _tensors(spec.inner_lrs, requires_grad=True)
        self.leaves = [*self.params.values(), *(self.inner_lrs or {}).values()]
        inner_batches: list[Any] = []

        def batch_for_step(k: int, current: Params) -> Any:
            inner_batches.append(source.inner_batch(k, current))
            return inner_batches[-1]

        with torch.set_grad_enabled(cfg.optimizer != "promp"):  # ProMP re-adapts per step
            steps = inner_loop(
                policy,
                expand_to_tasks(self.params, 1),
                batch_for_step,
                config=cfg,
                second_order=not cfg.first_order,
                inner_lrs=self.inner_lrs,
                loss=source.inner_loss,
            )
        post = source.post_batch(steps[-1])
        self.batch = MetaBatch(
            inner_batches, post, steps, generator, source.inner_loss, source.outer_loss
        )
        self.returns = (
            source.mean_return(self.batch.pre, steps[0], mean_loss=None),
            source.mean_return(post, steps[-1], mean_loss=None),
        )
        self._dist: Tensor | None = None
        self._fisher: Callable[[Tensor], Tensor] | None = None
        self.result = self._first()

    def _first(self) -> TaskResult:
        """L_i and grad L_i (Adam's whole contribution; TRPO keeps the graph for F_i v)."""
        cfg, batch = self.config, self.batch
        multi = cfg.multi_step_loss
        if cfg.optimizer == "promp":  # its contributions come from ``promp`` calls
            return TaskResult(np.array(np.nan, np.float32), np.zeros(0, np.float32), *self.returns)
        if cfg.optimizer == "trpo":
            self._dist = post_update_dist_params(self.policy, batch.steps[-1], batch.post)
            loss = meta_loss(
                self.policy, batch.steps, batch, multi_step=multi, last_dist=self._dist
            )
        else:
            loss = meta_loss(self.policy, batch.steps, batch, multi_step=multi)
        closed = closed_form_supported(self.policy, cfg, list(self.params))
        keep = cfg.optimizer == "trpo" and cfg.cg_subsample >= 1.0 and not closed
        grads = torch.autograd.grad(loss, self.leaves, retain_graph=keep, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(self.leaves, grads, strict=True)
        ]
        return TaskResult(loss.detach().numpy().copy(), flatten(grads).numpy(), *self.returns)

    # the duck-typed learner ``updates.fisher_on_subset`` re-adapts through: the learner's
    # own method (it reads only policy, params, config and inner_lrs, which a unit has)
    readapt = MetaLearner.readapt

    def fisher(self, v: np.ndarray) -> np.ndarray:
        """J_i^T M_i J_i v for TRPO's conjugate gradient (no damping: the driver adds it)."""
        if self._fisher is None:
            self._fisher = closed_form_fisher(self, self.batch)  # type: ignore[arg-type]
        if self._fisher is None:
            dist, kl_fn = self._dist, None
            if self.config.cg_subsample < 1.0:
                kl_fn, fisher_evaluate = fisher_on_subset(self, self.batch)  # type: ignore[arg-type]
                dist = fisher_evaluate()
            else:
                weights = kl_weights(self.batch.post)

                def kl_fn(p_old: Tensor, p_new: Tensor) -> Tensor:
                    return weights * self.policy.distribution.kl(p_old, p_new)

            assert dist is not None, "fisher() needs optimizer trpo"
            self._fisher = fisher_product(self.leaves, dist, kl_fn)
        return self._fisher(torch.from_numpy(np.array(v))).numpy()

    def _readapt_at(self, theta: Arrays, inner_lrs: Arrays | None) -> list[Params]:
        params = _tensors(theta, requires_grad=False) or {}
        lrs = _tensors(inner_lrs, requires_grad=False)
        return inner_loop(
            self.policy,
            expand_to_tasks(params, 1),
            lambda k, current: self.batch.inner_batches[k],
            config=self.config,
            second_order=False,
            inner_lrs=lrs,
            loss=self.batch.inner_loss,
            num_steps=len(self.batch.inner_batches),
        )

    def evaluate(self, theta: Arrays, inner_lrs: Arrays | None) -> tuple[np.ndarray, np.ndarray]:
        """(L_i, KL_i) at a trial theta: TRPO's line search (KL of the post-update policies
        on D'_i, each task's weighted mean)."""
        batch, dist = self.batch, self.policy.distribution
        with torch.no_grad():
            steps = self._readapt_at(theta, inner_lrs)
            new = post_update_dist_params(self.policy, steps[-1], batch.post)
            multi = self.config.multi_step_loss
            loss = meta_loss(self.policy, steps, batch, multi_step=multi, last_dist=new)
            old = batch.post.dist_params.detach()
            kl = (kl_weights(batch.post) * dist.kl(old, new)).sum()
        return loss.numpy().copy(), kl.numpy().copy()

    def promp(self, theta: Arrays, inner_lrs: Arrays | None) -> tuple[np.ndarray, ...]:
        """ProMP at theta (Rothfuss et al., 2019, eq. 11): the clipped loss L_i of the policy
        re-adapted with the lvc surrogate, L_i + kl_coef KL_i(pre-update), and its gradient."""
        cfg, batch = self.config, self.batch
        params = _tensors(theta, requires_grad=True) or {}
        lrs = _tensors(inner_lrs, requires_grad=True)
        leaves = [*params.values(), *(lrs or {}).values()]
        adapted = inner_loop(
            self.policy,
            expand_to_tasks(params, 1),
            lambda k, current: batch.inner_batches[k],
            config=cfg,
            second_order=not cfg.first_order,
            inner_lrs=lrs,
            loss=lvc_loss,
            num_steps=len(batch.inner_batches),
        )[-1]
        loss = outer_loss(self.policy, adapted, batch.post, clipped_loss(cfg.promp_clip))
        pre_kl = mean_kl(self.policy, expand_to_tasks(params, 1), batch.pre)
        total = loss + cfg.promp_kl_coef * pre_kl
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)
        ]
        return loss.detach().numpy().copy(), total.detach().numpy().copy(), flatten(grads).numpy()

    def kl(self, theta: Arrays, inner_lrs: Arrays | None) -> float:
        """KL(post-update policy before || after an update) on D'_i: Adam's logged KL."""
        if not isinstance(self.batch.post, Episodes):
            return float("nan")
        with torch.no_grad():
            adapted = self._readapt_at(theta, inner_lrs)[-1]
            return mean_kl(self.policy, adapted, self.batch.post).item()


class TaskWorker:
    """Serves the task units of meta-iterations: the policy (architecture; parameters come
    with each spec) and the task family, built once (data loaded once per worker); the
    current iteration's units, rebuilt from the spec whenever missing (idempotent calls)."""

    def __init__(
        self,
        policy: nn.Module,
        family: TaskFamily | Callable[[], TaskFamily],
        threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(int(threads))  # same numbers as the driver's threads
        self.policy = policy
        self.family = family if isinstance(family, TaskFamily) else family()
        self.key: tuple[str, int] | None = None
        self.units: dict[int, TaskUnit] = {}

    def _unit(self, spec: IterationSpec, index: int) -> TaskUnit:
        if spec.key != self.key:
            self.units.clear()
            self.key = spec.key
        if index not in self.units:
            self.units[index] = TaskUnit(self.policy, self.family, spec, index)
        return self.units[index]

    def begin(self, spec: IterationSpec, indices: Sequence[int]) -> list[TaskResult]:
        return [self._unit(spec, i).result for i in indices]

    def fisher(
        self, spec: IterationSpec, indices: Sequence[int], v: np.ndarray
    ) -> list[np.ndarray]:
        return [self._unit(spec, i).fisher(v) for i in indices]

    def evaluate(
        self, spec: IterationSpec, indices: Sequence[int], theta: Arrays, lrs: Arrays | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self._unit(spec, i).evaluate(theta, lrs) for i in indices]

    def kl(
        self, spec: IterationSpec, indices: Sequence[int], theta: Arrays, lrs: Arrays | None
    ) -> list[float]:
        return [self._unit(spec, i).kl(theta, lrs) for i in indices]

    def promp(
        self, spec: IterationSpec, indices: Sequence[int], theta: Arrays, lrs: Arrays | None
    ) -> list[tuple[np.ndarray, ...]]:
        return [self._unit(spec, i).promp(theta, lrs) for i in indices]

    def release(self, key: tuple[str, int]) -> None:
        """Free an iteration's units (their graphs) once the driver has updated theta."""
        if self.key == key:
            self.units.clear()

    def pid(self) -> int:
        return os.getpid()
