"""A meta-iteration as per-task units plus a reduction in task-index order (the backends).

Without a backend, ``MetaLearner.step`` computes every task's contributions in one vmapped
computation (``meta.contributions``). With one (``learner.backend``), the same iteration is
split where MAML splits naturally: each task's unit (``meta.tasks.TaskUnit``: its batches,
inner loop and contributions, the batched code on one task) runs wherever the
``TaskExecutor`` puts it, and ``TaskContributions`` hands the one meta-update
(``meta.updates``: Adam, TRPO, ProMP, the same classes as the batched path) the units'
contributions summed in task-index order and divided by T: grad L, every Fisher product
F v, the line search's (L, KL) at a trial theta, ProMP's gradients at the current theta.

Every task's randomness comes from (seed, iteration, index) (``meta.tasks.task_streams``),
and the sums run in a fixed order, so ``LocalExecutor`` (all units in this process) and a
Ray executor with any number of workers give bitwise identical parameters. The batched path
computes the same mathematics in a different order of floating-point operations (and draws
its randomness from one stream for all tasks), so it is not bitwise equal to these.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from metatrade.meta.optimizers import unflatten
from metatrade.meta.protocols import TaskFamily
from metatrade.meta.tasks import Arrays, IterationSpec, TaskResult, TaskWorker, to_arrays
from metatrade.meta.updates import KL_LOG_TASKS

if TYPE_CHECKING:
    from metatrade.meta.learner import MetaLearner


class TaskExecutor(Protocol):
    """Runs ``TaskWorker.call`` over an iteration's tasks; results in task order."""

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
        return obj.loss.nbytes + obj.grad.nbytes + 17
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
        return self.worker.call(method, spec, list(indices), *args)

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


class PerTaskBackend:
    """``MetaLearner.step``'s lines 4-8 and the tasks' contributions through a
    ``TaskExecutor`` (``distributed.attach`` sets it as ``learner.backend``)."""

    def __init__(self, executor: TaskExecutor) -> None:
        self.executor = executor
        self.run_id = uuid.uuid4().hex

    def begin(self, learner: MetaLearner, tasks: list[Any]) -> TaskContributions:
        """Ship theta and the sampled tasks; every unit samples, adapts and returns L_i and
        grad L_i (Adam, TRPO) and its returns."""
        ex = self.executor
        traffic = (ex.bytes_sent, ex.bytes_received)
        spec = IterationSpec(
            self.run_id,
            learner.iteration,
            tuple(tasks),
            to_arrays(learner.params),
            None if learner.inner_lrs is None else to_arrays(learner.inner_lrs),
            learner.config,
        )
        results: list[TaskResult] = ex.map("begin", spec)
        return TaskContributions(learner, ex, spec, results, traffic)


class TaskContributions:
    """``meta.updates.Contributions`` as sums over the units in task-index order / T; the
    trial points are the learner's current leaves, sent to the units as arrays."""

    def __init__(
        self,
        learner: MetaLearner,
        executor: TaskExecutor,
        spec: IterationSpec,
        results: list[TaskResult],
        traffic: tuple[int, int],
    ) -> None:
        self.learner, self.executor, self.spec, self.results = learner, executor, spec, results
        self.traffic = traffic
        self.num_tasks = len(results)
        self.kl_defined = results[0].kl_defined

    def _mean(self, values: Sequence[np.ndarray]) -> Tensor:
        return ordered_sum(values) / self.num_tasks

    def _grads(self, flat: Tensor) -> list[Tensor]:
        return [t.clone() for t in unflatten(flat, self.learner.leaves())]

    def _current(self) -> tuple[Arrays, Arrays | None]:
        lrs = self.learner.inner_lrs
        return to_arrays(self.learner.params), None if lrs is None else to_arrays(lrs)

    def gradient(self) -> tuple[Tensor, list[Tensor]]:
        loss = self._mean([r.loss for r in self.results])
        return loss, self._grads(self._mean([r.grad for r in self.results]))

    def fisher_product(self, v: Tensor) -> Tensor:
        return self._mean(self.executor.map("fisher", self.spec, v.detach().numpy()))

    def loss_and_kl(self) -> tuple[Tensor, Tensor]:
        pairs = self.executor.map("loss_and_kl", self.spec, *self._current())
        return self._mean([p[0] for p in pairs]), self._mean([p[1] for p in pairs])

    def promp_gradient(self) -> tuple[Tensor, Tensor, list[Tensor]]:
        outs = self.executor.map("promp_gradient", self.spec, *self._current())
        loss, total = self._mean([o[0] for o in outs]), self._mean([o[1] for o in outs])
        return loss, total, self._grads(self._mean([o[2] for o in outs]))

    def kl_after(self) -> float:
        head = range(min(self.num_tasks, KL_LOG_TASKS))
        kls = self.executor.map("kl_after", self.spec, *self._current(), indices=head)
        return sum(kls) / len(kls)

    def log(self, stats: dict[str, float]) -> dict[str, float]:
        """The units' mean returns before and after adaptation, and the iteration's traffic."""
        ex, num = self.executor, self.num_tasks
        return {
            "meta/return_pre": sum(r.return_pre for r in self.results) / num,
            "meta/return_post": sum(r.return_post for r in self.results) / num,
            "comm/bytes_sent": float(ex.bytes_sent - self.traffic[0]),
            "comm/bytes_received": float(ex.bytes_received - self.traffic[1]),
        }

    def release(self) -> None:
        self.executor.release(self.spec)


__all__ = ["LocalExecutor", "PerTaskBackend", "TaskContributions", "TaskExecutor", "ordered_sum"]
