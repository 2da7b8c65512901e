"""``RayExecutor``: a meta-iteration's task units on Ray actors, fault tolerant.

Each actor is a ``meta.tasks.TaskWorker``: it builds the task family once (its data loaded
once per actor) and serves the task slots placed on it, slot i on actor i mod W. Per
meta-iteration the driver puts one ``IterationSpec`` (theta, the sampled task ids, the config)
in Ray's object store; every call names it by reference, so its bytes travel once per node.
Calls carry only small arrays: a Fisher-product vector, a trial theta; results are per-task
gradients, products and scalars (``comm/bytes_*`` in the step's stats).

Fault tolerance: actors are created with ``max_restarts`` and ``max_task_retries``. A worker
process killed mid-iteration (or lost with its node) is restarted by Ray, which resubmits
the calls it had not finished; the restarted ``TaskWorker`` has lost its units and rebuilds
them from the spec (``TaskWorker._unit``). A unit's numbers depend only on (spec, task
index), so the iteration ends bitwise as if nothing had failed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from metatrade.errors import ConfigError
from metatrade.meta.pertask import payload_bytes
from metatrade.meta.protocols import TaskFamily
from metatrade.meta.tasks import IterationSpec, TaskWorker

RoundHook = Callable[[str, int], None]
"""``(method, round number)``: called after a round's calls are submitted, before they are
awaited (progress reports; fault-injection tests kill a worker here)."""


def import_ray() -> Any:
    """``ray``, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "run.backend: ray needs Ray: pip install 'metatrade[ray]' (ray==2.60.0)"
        ) from None
    return ray


# How long a cluster address may take to accept a connection before it counts as down
# (Ray itself retries for minutes with no output).
CONNECT_TIMEOUT_S = 5.0


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """``ConfigError`` unless something accepts connections at ``address`` ("host:port")
    within ``timeout`` seconds; "auto" is left to Ray (which fails fast without a cluster)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} (run.address): use auto or host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"--address {address} (run.address): no Ray cluster answers there within "
            f"{timeout:g} s ({err.strerror or err}); start one with `ray start --head` and pass "
            "the address it prints, or leave --address out to start a local instance"
        ) from None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect to Ray (``address``: "auto" or "host:port" of a running cluster) or start a
    local instance (None) of ``num_cpus`` CPUs, at most the machine's: more would start
    that many worker processes on too few cores. An existing connection of this process is
    reused as it is. ``ConfigError`` (one line) for an address nothing answers at or too
    many local CPUs, instead of Ray waiting for ever."""
    ray = import_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if address is None:
            if num_cpus is not None and num_cpus > usable_cpus():
                raise ConfigError(
                    f"--workers {num_cpus} (run.workers): this machine has {usable_cpus()} "
                    "CPUs and a local Ray instance runs one worker per CPU; use --workers "
                    f"<= {usable_cpus()}, or join a cluster with --address"
                )
            kwargs["num_cpus"] = num_cpus
        else:
            check_address(address)
        ray.init(address=address, **kwargs)
    return ray


class RayExecutor:
    """``meta.pertask.TaskExecutor`` on ``workers`` Ray actors (see the module docstring).
    ``map(method, ...)`` calls ``TaskWorker.call(method, ...)`` on every actor holding one of
    the tasks and returns the results in task order."""

    name = "ray"

    def __init__(
        self,
        policy: nn.Module,
        family: TaskFamily | Callable[[], TaskFamily],
        *,
        workers: int,
        address: str | None = None,
        threads: int | None = None,
        cpus_per_worker: float = 1.0,
        max_restarts: int = 5,
        round_hook: RoundHook | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"RayExecutor: workers={workers}; use at least one worker.")
        self.ray = ray = connect(address, num_cpus=None if address else max(workers, 1))
        total = ray.cluster_resources().get("CPU", 0.0)
        if workers * cpus_per_worker > total:
            raise ConfigError(
                f"run.workers={workers} x {cpus_per_worker} CPU > the Ray cluster's {total:g} "
                "CPUs: the extra actors would wait forever; lower run.workers or add nodes."
            )
        import torch

        threads = threads or torch.get_num_threads()  # the driver's: same rounding
        actor = ray.remote(TaskWorker).options(
            num_cpus=cpus_per_worker,
            max_restarts=max_restarts,
            max_task_retries=-1,  # retried until the actor is dead for good
            scheduling_strategy="SPREAD",
        )
        # the executor owns the constructor arguments, so a restarted actor can read them
        # for as long as the executor lives (ray-project/ray#53727)
        self._init_refs = (ray.put(policy), ray.put(family))
        self.actors = [actor.remote(*self._init_refs, threads) for _ in range(workers)]
        self.num_workers = workers
        self.round_hook = round_hook
        self.rounds = 0
        self.bytes_sent = self.bytes_received = 0
        self._spec: tuple[tuple[str, int], Any] | None = None
        self._pending: list[Any] = []

    def _spec_ref(self, spec: IterationSpec) -> Any:
        if self._spec is None or self._spec[0] != spec.key:
            self._spec = (spec.key, self.ray.put(spec))
        return self._spec[1]

    def placement(self, indices: Sequence[int]) -> list[list[int]]:
        """The task slots of each actor: slot i on actor i mod W."""
        groups: list[list[int]] = [[] for _ in self.actors]
        for i in indices:
            groups[i % self.num_workers].append(i)
        return groups

    def map(
        self, method: str, spec: IterationSpec, *args: Any, indices: Sequence[int] | None = None
    ) -> list[Any]:
        indices = list(range(spec.num_tasks) if indices is None else indices)
        self.ray.get(self._pending)
        self._pending = []
        first_of_iteration = self._spec is None or self._spec[0] != spec.key
        spec_ref = self._spec_ref(spec)
        arg_refs = [self.ray.put(a) for a in args]
        groups = self.placement(indices)
        futures = {}
        for actor, group in zip(self.actors, groups, strict=True):
            if group:
                futures[tuple(group)] = actor.call.remote(method, spec_ref, group, *arg_refs)
        busy = len(futures)
        self.bytes_sent += busy * payload_bytes(list(args)) + 8 * len(indices)
        if first_of_iteration:
            self.bytes_sent += busy * payload_bytes(spec)
        self.rounds += 1
        if self.round_hook is not None:
            self.round_hook(method, self.rounds)
        by_task: dict[int, Any] = {}
        for slots, values in zip(futures, self.ray.get(list(futures.values())), strict=True):
            by_task.update(zip(slots, values, strict=True))
        results = [by_task[i] for i in indices]
        self.bytes_received += payload_bytes(results)
        return results

    def release(self, spec: IterationSpec) -> None:
        """Free the iteration's units on every actor (waited for at the next round)."""
        self._pending = [actor.release.remote(spec.key) for actor in self.actors]
        self._spec = None

    def pids(self) -> list[int]:
        """The actors' process ids (for the fault-injection tests and diagnostics)."""
        return self.ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        """End the actors (Ray itself stays connected: it may be the caller's)."""
        self.ray.get(self._pending)
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors, self._pending = [], []
