"""A run's trial registry: where its file is (``run.registry``, else ``trials.sqlite``
beside the run directory), the hash that names a run's configuration, the ``TrialLog`` an
evaluation records its trials with (``metatrade.evaluation.registry``), and the records of
a finished training loop (``record_training``) and of a meta-test's rows
(``record_evaluation``): every meta-train, train, evaluate, walkforward and tune is a trial
(issue 21)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metatrade.evaluation.registry import (
    TrialLog,
    TrialRegistry,
    config_hash,
    data_hash,
    registry_path,
    series_metrics,
)
from metatrade.evaluation.sealed import Period, open_period
from metatrade.training.config import RunConfig

if TYPE_CHECKING:
    from metatrade.data.task_arrays import TaskArrays
    from metatrade.evaluation.protocol_result import EvaluationResult

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


def training_data_hash(env: Any, cfg: RunConfig) -> str:
    """The data set a training loop read: the hash of its training tasks' arrays (a trading
    family's ``loader.tasks("train")``, a ``BatchTradingEnv``'s ``task_arrays``), else, for
    a family with no arrays (2-D navigation), the hash of the config's data section."""
    source = getattr(env, "loader", None)
    if source is not None and hasattr(source, "tasks") and hasattr(source, "get_task_arrays"):
        return data_hash([source.get_task_arrays(*t) for t in source.tasks("train")])
    arrays = getattr(env, "task_arrays", None)
    if arrays:
        return data_hash(arrays)
    sections = cfg.model_dump(mode="json")
    return config_hash({"data": sections["data"], "env": sections["env"]})


# The per-iteration figure a training trial summarises: the return after adaptation
# (meta-training) or the mean episode return (PPO).
TRAINING_SERIES = {"meta-train": "meta/return_post", "train": "rollout/ep_rew_mean"}


def record_training(trainer: Any, kind: str) -> int | None:
    """A finished training loop of ``trainer`` (a ``Trainer`` that writes a run) as a trial
    of ``kind`` (meta-train or train) on its training tasks' data set, split "train": the
    per-iteration series of ``TRAINING_SERIES[kind]`` summarised (``period`` "iteration":
    it counts in N of that data set, not in the per-day Sharpe variance), its last value
    and the iterations. None (nothing recorded) for a trainer with no run directory."""
    if trainer.run_dir is None:
        return None
    cfg, history = trainer.config, trainer.history
    series = np.array([float(h.get(TRAINING_SERIES[kind], math.nan)) for h in history])
    metrics = {
        **series_metrics(series, period="iteration"),
        "last": float(series[-1]) if series.size else math.nan,
        "iterations": float(series.size),
        "series": TRAINING_SERIES[kind],
    }
    return open_registry(cfg, trainer.run_dir).record_trial(
        kind=kind,
        run=str(trainer.run_dir),
        config_hash=run_config_hash(cfg),
        data_hash=training_data_hash(trainer.env, cfg),
        split="train",
        seed=cfg.run.seed,
        label=kind,
        metrics=metrics,
    )


def record_evaluation(
    result: EvaluationResult, log: TrialLog, *, data_hash: str, split: str
) -> int:
    """Every policy row (``<start>@k<j>``) of a meta-test as a trial of ``log``'s kind on
    ``data_hash`` / ``split``: the mean, Sharpe and count of its test-window returns
    (``period`` "window": in N, not in the per-day Sharpe variance nor PBO, which need
    per-day returns), and its mean whole-split backtest. References and classical rows are
    not trials. Returns how many were recorded."""
    log = log.with_settings({"protocol": result.config})
    count = 0
    for label, windows in result.returns.items():
        if "@k" not in label:
            continue
        backtest = result.backtests.get(label)
        extra = {"backtest_mean": None if backtest is None else float(np.mean(backtest))}
        log.registry.record_trial(
            kind=log.kind,
            run=log.run,
            config_hash=log.config_hash,
            data_hash=data_hash,
            split=split,
            seed=log.seed,
            label=log.prefix + label,
            metrics={**series_metrics(np.ravel(windows), period="window"), **extra},
        )
        count += 1
    return count


def open_evaluation(
    cfg: RunConfig,
    run_dir: str | Path,
    arrays: Sequence[TaskArrays],
    *,
    split: str,
    final: bool,
    command: str,
) -> Period:
    """``sealed.open_period`` for an evaluation of ``cfg``'s run writing into ``run_dir``
    (what a look records): the run's registry (``open_registry(cfg)``, never one beside the
    output folder), the data set of the full task ``arrays`` (every split: a validation
    score and a test look name the same data set)."""
    registry = open_registry(cfg)
    return open_period(
        split,
        final=final,
        registry=registry,
        run=str(run_dir),
        command=command,
        data_hash=data_hash(list(arrays)),
    )
