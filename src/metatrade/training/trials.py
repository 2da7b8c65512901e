"""A run's trial registry: where its file is (``run.registry``, else ``trials.sqlite``
beside the run directory), the hash that names a run's configuration, and the ``TrialLog``
an evaluation records its trials with (``metatrade.evaluation.registry``)."""

from __future__ import annotations

from pathlib import Path

from metatrade.evaluation.registry import TrialLog, TrialRegistry, config_hash, registry_path
from metatrade.training.config import RunConfig

# Keys that do not change what a run scores: bookkeeping, speed, the seed (a column of its
# own) and the search space of ``metatrade tune`` (a trial is one point of it).
BOOKKEEPING = tuple(
    [f"run.{k}" for k in ("seed", "out_dir", "name", "log_interval", "checkpoint_interval")]
    + [f"run.{k}" for k in ("torch_threads", "keep_freed_memory", "backend", "workers")]
    + ["run.address", "run.device", "run.registry", "data.strict", "tune"]
)


def open_registry(cfg: RunConfig, run_dir: str | Path | None = None) -> TrialRegistry:
    """The registry of ``cfg``'s runs: ``run.registry``, else ``trials.sqlite`` in the
    folder holding the run directory (``runs/trials.sqlite`` for ``runs/<name>-seed0``)."""
    return TrialRegistry(registry_path(run_dir or cfg.run_dir(), cfg.run.registry))


def run_config_hash(cfg: RunConfig) -> str:
    """The hash of what ``cfg`` trains and scores (``BOOKKEEPING`` left out)."""
    return config_hash(cfg.to_dict(), ignore=BOOKKEEPING)


def trial_log(
    cfg: RunConfig, *, kind: str, run: str | Path, prefix: str = "", run_dir: Path | None = None
) -> TrialLog:
    """The ``TrialLog`` of one command of a run (``kind``: walkforward, tune, ...)."""
    return TrialLog(
        open_registry(cfg, run_dir),
        run=str(run),
        config_hash=run_config_hash(cfg),
        kind=kind,
        seed=cfg.run.seed,
        prefix=prefix,
    )
