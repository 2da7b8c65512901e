"""Evaluation fanned out over held-out tasks on Ray: one remote call per task.

The walk-forward protocol's per-task work (every fold's adaptation and trading) depends
only on that task, the starts, the adapter and the config: every fold is adapted with its
own seed (``adaptation_seed``: run seed, start, task, fold row), so the records are bitwise the
same whichever process computes them, and the driver's pooled scoring sees them in task
order. Calls are retried when a worker dies (``max_retries``); a task's work is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from metatrade.distributed.ray_executor import connect

TaskMap = Callable[[Callable[..., Any], Iterable[Any]], list[Any]]


def ray_task_map(*, address: str | None = None, workers: int = 2) -> TaskMap:
    """A ``map(fn, items)`` whose calls run as Ray tasks (at most ``workers`` CPUs of a
    local instance, or the cluster at ``address``); results come back in item order."""
    ray = connect(address, num_cpus=None if address is not None else workers)

    remote = ray.remote(num_cpus=1, max_retries=3)(_apply)

    def task_map(fn: Callable[..., Any], items: Iterable[Any]) -> list[Any]:
        fn_ref = ray.put(fn)  # the starts and the adapter travel once, not once per task
        return list(ray.get([remote.remote(fn_ref, item) for item in items]))

    return task_map


def _apply(fn: Callable[..., Any], item: Any) -> Any:
    return fn(item)


def local_task_map(fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
    """The in-process map (the reference the Ray one is bitwise equal to)."""
    return [fn(item) for item in items]
