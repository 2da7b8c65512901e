"""One task's share of a meta-iteration, computable anywhere: in-process or on a Ray actor.

A meta-iteration of MAML (Finn et al., 2017, Algorithm 3) is per-task work plus a sum:
task i's batch D_i (sampled episodes or exact windows), its inner loop theta'_i, its
post-update batch D'_i and its contributions to the meta-update (Adam: grad L_i; TRPO:
grad L_i, the Fisher-vector products J_i^T M_i J_i v and the line search's L_i and KL_i at
trial thetas) depend on theta and on task i only. ``TaskUnit`` computes them for one task
from an ``IterationSpec`` (theta, the task list, the config: small and picklable) with the
same code as the batched backend (``meta.contributions``, on a batch of one task);
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
from metatrade.meta.contributions import (
    BatchedContributions,
    adaptation_graph_needed,
    sample_and_adapt,
)
from metatrade.meta.estimators import make_source
from metatrade.meta.optimizers import flatten
from metatrade.meta.protocols import TaskFamily
from metatrade.meta.updates import make_update
from metatrade.seeding import derive_seed

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
    Meta-SGD rates; empty for ProMP, whose gradients come later), the mean returns before and
    after adaptation (for the log) and whether a KL is defined (sampled episodes)."""

    loss: np.ndarray
    grad: np.ndarray
    return_pre: float
    return_post: float
    kl_defined: bool


def task_streams(
    seed: int, iteration: int, index: int
) -> tuple[torch.Generator, np.random.Generator]:
    """Task ``index``'s torch and numpy generators in meta-iteration ``iteration``: a
    function of (seed, iteration, index) only (``derive_seed``), so a task's batch does not
    depend on which worker draws it."""
    if min(seed, iteration, index) < 0:
        raise ValueError(
            f"task_streams: seed={seed}, iteration={iteration}, index={index} must all be >= 0 "
            "(run.seed is a non-negative integer)."
        )
    torch_seed = derive_seed(seed, "meta-iteration", iteration, "task", index, "torch")
    numpy_seed = derive_seed(seed, "meta-iteration", iteration, "task", index, "numpy")
    return torch.Generator().manual_seed(torch_seed), np.random.default_rng(numpy_seed)


def to_arrays(params: Params) -> Arrays:
    """Detached CPU copies as numpy arrays: what travels between driver and workers."""
    return {k: v.detach().cpu().numpy().copy() for k, v in params.items()}


def _tensors(arrays: Arrays) -> Params:
    return {k: torch.from_numpy(np.array(v)).requires_grad_() for k, v in arrays.items()}


class TaskUnit:
    """Task ``index`` of ``spec``: its batches and adaptation, and its contributions (the
    batched code on one task: ``meta.contributions.BatchedContributions``). Its parameters
    are a ``MetaParameters`` of their own, moved to each trial theta the driver sends."""

    def __init__(self, policy: nn.Module, family: TaskFamily, spec: IterationSpec, index: int):
        cfg = self.config = spec.config
        self.policy = policy
        generator, rng = task_streams(cfg.seed, spec.iteration, index)
        self.params = _tensors(spec.theta)
        self.inner_lrs = None if spec.inner_lrs is None else _tensors(spec.inner_lrs)
        update = make_update(cfg.optimizer)
        task = [spec.tasks[index]]
        source = make_source(policy, family, task, config=cfg, rng=rng, generator=generator)
        losses: list[Tensor] = []
        batch = sample_and_adapt(
            self,
            source,
            num_tasks=1,
            keep_graph=adaptation_graph_needed(update, self),
            generator=generator,
            losses_out=losses,
        )
        self.contributions = BatchedContributions(
            self, batch, fisher=update.fisher, source=source, inner_losses=losses
        )
        returns = self.contributions.returns(None)
        kl_defined = self.contributions.kl_defined
        if update.keeps_adaptation_graph:  # L_i and grad L_i (TRPO keeps what F_i v needs)
            loss, grads = self.contributions.gradient()
            first = loss.numpy().copy(), flatten(grads).numpy()
        else:  # ProMP: its gradients come from ``promp_gradient`` calls
            first = np.array(np.nan, np.float32), np.zeros(0, np.float32)
        self.result = TaskResult(*first, *returns, kl_defined)

    def leaves(self) -> list[Tensor]:
        return [*self.params.values(), *(self.inner_lrs or {}).values()]

    def at(self, theta: Arrays, inner_lrs: Arrays | None) -> BatchedContributions:
        """The contributions with this unit's parameters moved to (theta, inner_lrs)."""
        with torch.no_grad():
            for k, v in theta.items():
                self.params[k].copy_(torch.from_numpy(np.array(v)))
            for k, v in (inner_lrs or {}).items():
                assert self.inner_lrs is not None
                self.inner_lrs[k].copy_(torch.from_numpy(np.array(v)))
        return self.contributions

    def fisher(self, v: np.ndarray) -> np.ndarray:
        """J_i^T M_i J_i v for TRPO's conjugate gradient (no damping: the driver adds it)."""
        return self.contributions.fisher_product(torch.from_numpy(np.array(v))).numpy()

    def loss_and_kl(self, theta: Arrays, inner_lrs: Arrays | None) -> tuple[np.ndarray, ...]:
        """(L_i, KL_i) at a trial theta: TRPO's line search."""
        loss, kl = self.at(theta, inner_lrs).loss_and_kl()
        return loss.numpy().copy(), kl.numpy().copy()

    def promp_gradient(self, theta: Arrays, inner_lrs: Arrays | None) -> tuple[np.ndarray, ...]:
        """ProMP at theta: (L_i, L_i + kl_coef KL_i, its gradient, flat)."""
        loss, total, grads = self.at(theta, inner_lrs).promp_gradient()
        return loss.numpy().copy(), total.numpy().copy(), flatten(grads).numpy()

    def kl_after(self, theta: Arrays, inner_lrs: Arrays | None) -> float:
        """KL(post-update policy before || after an update) on D'_i: the logged KL."""
        return self.at(theta, inner_lrs).kl_after()


UNIT_METHODS = ("fisher", "loss_and_kl", "promp_gradient", "kl_after")
"""what a driver may ask of a unit after "begin" (``meta.pertask.TaskContributions``)"""


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

    def call(
        self, method: str, spec: IterationSpec, indices: Sequence[int], *args: Any
    ) -> list[Any]:
        """``unit.<method>(*args)`` of every unit in ``indices``, in that order; "begin":
        their first results (``TaskResult``)."""
        if method == "begin":
            return [self._unit(spec, i).result for i in indices]
        if method not in UNIT_METHODS:
            raise ValueError(f"TaskWorker.call: unknown method {method!r}; use {UNIT_METHODS}")
        return [getattr(self._unit(spec, i), method)(*args) for i in indices]

    def release(self, key: tuple[str, int]) -> None:
        """Free an iteration's units (their graphs) once the driver has updated theta."""
        if self.key == key:
            self.units.clear()

    def pid(self) -> int:
        return os.getpid()
