"""Where a meta-iteration's per-task work runs: ``batched`` (one vmapped computation in this
process, the default), ``local`` (per-task units in this process) or ``ray`` (per-task units
on Ray actors). All three feed the same meta-update (``meta.updates``); ``local`` and ``ray`` are bitwise
equal for any number of workers; see ``metatrade.meta.pertask`` and docs/distributed.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from metatrade.meta.pertask import LocalExecutor, PerTaskBackend, TaskExecutor
from metatrade.meta.protocols import TaskFamily

BACKENDS = ("batched", "local", "ray")


def make_executor(
    backend: str,
    policy: nn.Module,
    family: TaskFamily | Callable[[], TaskFamily],
    *,
    workers: int = 1,
    address: str | None = None,
    **ray_options: Any,
) -> TaskExecutor | None:
    """The executor of ``backend`` (None for ``batched``). ``family``: the task family, or a
    picklable function that builds it (what Ray actors call once each, so a trading family
    loads its data on the worker instead of being shipped from the driver)."""
    if backend == "batched":
        return None
    if backend == "local":
        return LocalExecutor(policy, family)
    if backend == "ray":
        from metatrade.distributed.ray_executor import RayExecutor

        return RayExecutor(policy, family, workers=workers, address=address, **ray_options)
    raise ValueError(f"run.backend={backend!r}: use one of {', '.join(BACKENDS)}.")


def attach(learner: Any, executor: TaskExecutor | None) -> None:
    """Run ``learner``'s meta-iterations through ``executor`` (None: the batched path)."""
    learner.backend = None if executor is None else PerTaskBackend(executor)


__all__ = ["BACKENDS", "LocalExecutor", "PerTaskBackend", "TaskExecutor", "attach", "make_executor"]
