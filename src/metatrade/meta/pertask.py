"""A meta-iteration as per-task units plus a reduction in task-index order (the backends).

``MetaLearner.step`` batches every task of a meta-batch into one vmapped computation (the
fast default). With a backend (``learner.backend``), the same iteration is split where MAML
splits naturally: each task's unit (``meta.tasks.TaskUnit``: its batches, inner loop and
contributions) runs wherever the ``TaskExecutor`` puts it, and the driver sums the
contributions in task-index order and applies the meta-update:

* Adam: grad = (sum_i grad L_i) / T, then the usual clipping and Adam step;
* ProMP (Rothfuss et al., 2019): ``promp_steps`` such Adam steps, each from the tasks'
  gradients of the clipped objective at the current theta;
* TRPO (Schulman et al., 2015): g = (sum_i grad L_i) / T; every conjugate-gradient product
  F v = (sum_i J_i^T M_i J_i v) / T + damping v; every line-search point
  (sum_i L_i / T, sum_i KL_i / T) (``optimizers.trpo_search``, shared with the batched TRPO).

Every task's randomness comes from (seed, iteration, index) (``meta.tasks.task_streams``),
and the sums run in a fixed order, so ``LocalExecutor`` (all units in this process) and a
Ray executor with any number of workers give bitwise identical parameters. The batched path
computes the same mathematics in a different order of floating-point operations (and draws
its randomness from one stream for all tasks), so it is not bitwise equal to these.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from metatrade.meta.optimizers import flatten, trpo_search, warn_skip
from metatrade.meta.protocols import TaskFamily
from metatrade.meta.tasks import IterationSpec, TaskResult, TaskWorker, to_arrays
from metatrade.meta.updates import KL_LOG_TASKS, apply_gradient_values

if TYPE_CHECKING:
    from metatrade.meta.learner import MetaLearner


class TaskExecutor(Protocol):
    """Runs ``TaskWorker`` methods over an iteration's tasks; results in task order."""

    name: str
    num_workers: int
    bytes_sent: int
    """payload bytes sent to workers so far (numpy arrays and specs)"""
    bytes_received: int

    def map(
        self, method: str, spec: IterationSpec, *args: Any, indices: Sequence[int] | None = None
    ) -> list[Any]: ...

    def release(self, spec: IterationSpec) -> None: ...

    def close(self) -> None: ...


def payload_bytes(obj: Any) -> int:
    """Bytes of the arrays (and 8 per scalar) in ``obj``: what a call ships, for the log."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, TaskResult):
        return obj.loss.nbytes + obj.grad.nbytes + 16
    if isinstance(obj, IterationSpec):
        arrays = [obj.theta, obj.inner_lrs or {}]
        return sum(v.nbytes for d in arrays for v in d.values()) + 64 * len(obj.tasks) + 1024
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(payload_bytes(v) for v in obj)
    return 8


class LocalExecutor:
    """Every task unit in this process, one after another: the reference the Ray backend is
    bitwise equal to (and what a machine without Ray can check it against)."""

    name = "local"
    num_workers = 1

    def __init__(self, policy: nn.Module, family: TaskFamily | Callable[[], TaskFamily]):
        self.worker = TaskWorker(policy, family)
        self.bytes_sent = self.bytes_received = 0

    def map(
        self, method: str, spec: IterationSpec, *args: Any, indices: Sequence[int] | None = None
    ) -> list[Any]:
        indices = range(spec.num_tasks) if indices is None else indices
        return getattr(self.worker, method)(spec, list(indices), *args)

    def release(self, spec: IterationSpec) -> None:
        self.worker.release(spec.key)

    def close(self) -> None:
        self.worker.units.clear()


def ordered_sum(values: Sequence[np.ndarray]) -> Tensor:
    """sum_i values[i], added in index order (fixed rounding, whatever ran the tasks)."""
    total = torch.from_numpy(np.array(values[0]))
    for v in values[1:]:
        total = total + torch.from_numpy(np.array(v))
    return total


class PerTaskStep:
    """``MetaLearner.step`` through a ``TaskExecutor`` (Algorithm 3 with lines 4-8 per task)."""

    def __init__(self, executor: TaskExecutor) -> None:
        self.executor = executor
        self.run_id = uuid.uuid4().hex

    def __call__(self, learner: MetaLearner, rng: np.random.Generator) -> dict[str, float]:
        cfg, ex = learner.config, self.executor
        t0 = time.perf_counter()
        sent0, recv0 = ex.bytes_sent, ex.bytes_received
        tasks = learner.family.sample_tasks(cfg.meta_batch_size, task_set="train", rng=rng)
        spec = IterationSpec(
            self.run_id,
            learner.iteration,
            tuple(tasks),
            to_arrays(learner.params),
            None if learner.inner_lrs is None else to_arrays(learner.inner_lrs),
            cfg,
        )
        results: list[TaskResult] = ex.map("begin", spec)
        t1 = time.perf_counter()
        try:
            update = {"adam": _adam, "trpo": _trpo, "promp": _promp}[cfg.optimizer]
            stats = update(learner, ex, spec, results)
        finally:
            ex.release(spec)
        t2 = time.perf_counter()
        learner.iteration += 1
        num = len(results)
        return stats | {
            "meta/return_pre": sum(r.return_pre for r in results) / num,
            "meta/return_post": sum(r.return_post for r in results) / num,
            "meta/iteration": float(learner.iteration),
            "time/sample_s": t1 - t0,
            "time/update_s": t2 - t1,
            "time/iteration_s": t2 - t0,
            "comm/bytes_sent": float(ex.bytes_sent - sent0),
            "comm/bytes_received": float(ex.bytes_received - recv0),
        }


def _grad_and_loss(results: list[TaskResult]) -> tuple[Tensor, Tensor]:
    num = len(results)
    return ordered_sum([r.grad for r in results]) / num, ordered_sum(
        [r.loss for r in results]
    ) / num


def _current(learner: MetaLearner) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    lrs = None if learner.inner_lrs is None else to_arrays(learner.inner_lrs)
    return to_arrays(learner.params), lrs


def _adam(
    learner: MetaLearner, ex: TaskExecutor, spec: IterationSpec, results: list[TaskResult]
) -> dict[str, float]:
    g, loss = _grad_and_loss(results)
    leaves = learner.leaves()
    grads = [t.clone() for t in _unflatten(g, leaves)]
    norm, skipped = apply_gradient_values(learner, grads, loss, "Adam")
    stats = {"meta/loss": loss.item(), "meta/grad_norm": norm, "meta/skipped": float(skipped)}
    if spec.config.estimator == "sampled":
        stats["meta/kl"] = _logged_kl(learner, ex, spec)
    return stats


def _logged_kl(learner: MetaLearner, ex: TaskExecutor, spec: IterationSpec) -> float:
    """Adam's / ProMP's logged KL after the update, on the first ``KL_LOG_TASKS`` tasks."""
    head = range(min(spec.num_tasks, KL_LOG_TASKS))
    kls = ex.map("kl", spec, *_current(learner), indices=head)
    return sum(kls) / len(kls)


def _promp(
    learner: MetaLearner, ex: TaskExecutor, spec: IterationSpec, results: list[TaskResult]
) -> dict[str, float]:
    """ProMP's ``promp_steps`` Adam steps, each on the tasks' summed contributions at the
    current theta (as ``updates.ProMPUpdate``)."""
    num, leaves = spec.num_tasks, learner.leaves()
    first_loss, norm, skipped_any = float("nan"), 0.0, False
    for k in range(learner.config.promp_steps):
        outs = ex.map("promp", spec, *_current(learner))
        total = ordered_sum([o[1] for o in outs]) / num
        g = ordered_sum([o[2] for o in outs]) / num
        if k == 0:
            first_loss = (ordered_sum([o[0] for o in outs]) / num).item()
        grads = [t.clone() for t in _unflatten(g, leaves)]
        norm, skipped = apply_gradient_values(learner, grads, total, "ProMP")
        skipped_any |= skipped
    return {
        "meta/loss": first_loss,
        "meta/kl": _logged_kl(learner, ex, spec),
        "meta/grad_norm": norm,
        "meta/skipped": float(skipped_any),
    }


def _unflatten(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(flat[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


def _trpo(
    learner: MetaLearner, ex: TaskExecutor, spec: IterationSpec, results: list[TaskResult]
) -> dict[str, float]:
    cfg, num = learner.config, spec.num_tasks
    g, loss = _grad_and_loss(results)
    grad_norm = g.norm().item()
    if not np.isfinite(grad_norm):
        warn_skip("TRPO", grad_norm)
        return _trpo_stats(loss.item(), loss.item(), 0.0, grad_norm, False, 0.0, True)

    def fisher_vp(v: Tensor) -> Tensor:
        products = ex.map("fisher", spec, v.detach().numpy())
        return ordered_sum(products) / num + cfg.cg_damping * v

    def evaluate() -> tuple[Tensor, Tensor]:
        pairs = ex.map("evaluate", spec, *_current(learner))
        return ordered_sum([p[0] for p in pairs]) / num, ordered_sum([p[1] for p in pairs]) / num

    res = trpo_search(
        learner.leaves(),
        g,
        loss.item(),
        fisher_vp,
        evaluate,
        grad_norm=grad_norm,
        max_kl=cfg.max_kl,
        cg_iters=cfg.cg_iters,
        backtrack_ratio=cfg.ls_backtrack_ratio,
        max_backtracks=cfg.ls_max_steps,
    )
    return _trpo_stats(
        res.loss_before,
        res.loss_after,
        res.kl_after,
        res.grad_norm,
        res.accepted,
        res.step_fraction,
        res.skipped,
    )


def _trpo_stats(
    before: float,
    after: float,
    kl: float,
    norm: float,
    accepted: bool,
    fraction: float,
    skipped: bool,
) -> dict[str, float]:
    return {
        "meta/loss": before,
        "meta/loss_after": after,
        "meta/kl": kl,
        "meta/grad_norm": norm,
        "meta/step_accepted": float(accepted),
        "meta/step_fraction": fraction,
        "meta/skipped": float(skipped),
    }


__all__ = ["LocalExecutor", "PerTaskStep", "TaskExecutor", "flatten", "ordered_sum"]
