"""The run config's ``run.backend`` / ``run.workers`` / ``run.address`` as an executor.

``Trainer.meta_train`` opens one for the run and closes it at the end (``backend_for_run``);
with ``ray`` every actor builds the task family from the run config (``make_family``) once,
so the data is read on the worker, never shipped from the driver (docs/distributed.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from typing import Any

from metatrade.errors import ConfigError
from metatrade.training.config import RunConfig


@contextlib.contextmanager
def backend_for_run(cfg: RunConfig, learner: Any, family: Any) -> Iterator[None]:
    """Run ``learner``'s iterations on ``cfg.run.backend`` while the block runs.

    ``local`` runs the per-task units on ``family`` (the trainer's own); ``ray`` on actors
    that build the family with ``make_family(cfg)``. A learner that already has a backend
    (set by the caller) keeps it.
    """
    from metatrade.distributed import attach, make_executor
    from metatrade.training.build import make_family

    if cfg.run.backend == "batched" or learner.backend is not None:
        yield
        return
    device = next(iter(learner.params.values())).device
    if device.type != "cpu":
        raise ConfigError(
            f"run.backend: {cfg.run.backend} computes every task unit on the CPU, but the "
            f"policy is on {device} (run.device: {cfg.run.device}); use run.device: cpu "
            "with it, or run.backend: batched on the GPU."
        )
    source = family if cfg.run.backend == "local" else partial(make_family, cfg)
    executor = make_executor(
        cfg.run.backend,
        learner.policy,
        source,
        workers=cfg.run.workers,
        address=cfg.run.address,
    )
    attach(learner, executor)
    try:
        yield
    finally:
        attach(learner, None)
        if executor is not None:
            executor.close()
