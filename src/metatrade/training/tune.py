"""``metatrade tune``: choose a run's settings with Optuna, reading the validation split only.

Each Optuna trial is one point of the config's ``tune.space`` (TPE sampler seeded from
``run.seed``), meta-trained from scratch with the run's own budget and seed, and scored
``tune.checkpoints`` times during meta-training; ``MedianPruner`` stops a trial whose score
is below the median of earlier trials at the same checkpoint (after ``tune.startup_trials``
trials). A score is a walk-forward over the held-out tasks' **validation** split: folds of
``tune.fold_days`` sessions, each re-adapted with ``tune.steps`` inner steps on the
``tune.adapt_days`` sessions before it, on tasks cut after their validation split
(``cut_after``), so no test bar is ever in memory. The objective is the pooled per-day
Sharpe ratio of ``MAML@k<steps>`` (0 for a policy that never trades).

Why the walk-forward rather than the single-split protocol on validation windows: on a
validation split of ~270 bars the protocol's test windows overlap many times over, while
the walk-forward scores each validation day once, with the statistic the reports show.

Storage: Optuna's RDB storage in the trial registry's SQLite file (``sqlite:///...``, in
Optuna's own tables beside ``registry_*``). Every trial, pruned ones included, is also a
registry trial (kind ``tune``, split ``validation``, its per-day returns), so the deflated
Sharpe ratio's N and the PBO of later reports on these tasks count it. Writes
``<out>/best.yaml`` (the config with the best trial's values) and ``<out>/tune.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from metatrade.errors import ConfigError
from metatrade.io import atomic_write_text, json_safe
from metatrade.seeding import derive_seed
from metatrade.training.config import RunConfig, apply_overrides, save_config
from metatrade.training.trials import run_config_hash, trial_log

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from metatrade.evaluation.registry import TrialLog
    from metatrade.evaluation.walkforward import WalkForwardTask


@dataclass
class TuneResult:
    """What a ``metatrade tune`` run found and wrote."""

    study: str
    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]
    files: dict[str, Path]


def check_space(cfg: RunConfig) -> None:
    """Every bound and choice of ``tune.space`` must be a valid value of its key
    (``ConfigError`` naming ``tune.space.<path>`` otherwise)."""
    if not cfg.tune.space:
        raise ConfigError(
            "tune.space is empty: add e.g. meta.inner_lr: {type: log_uniform, low: 0.01, "
            "high: 1.0} to the config's tune section (docs/configuration.md)"
        )
    for path, rng in cfg.tune.space.items():
        values = (rng.choices or []) if rng.type == "categorical" else list(rng.bounds)
        for value in values:
            v = int(value) if rng.type == "int" else value
            try:
                apply_overrides(cfg, {path: v})
            except ConfigError as err:
                raise ConfigError(
                    f"tune.space.{path}: {v!r} is not a valid value ({err})"
                ) from None


def suggest(trial: optuna.Trial, cfg: RunConfig) -> dict[str, Any]:
    """One point of ``tune.space`` (categorical values travel as JSON strings)."""
    out: dict[str, Any] = {}
    for path, rng in cfg.tune.space.items():
        if rng.type == "categorical":
            pick = trial.suggest_categorical(path, [json.dumps(c) for c in rng.choices or []])
            out[path] = json.loads(str(pick))
        elif rng.type == "int":
            low, high = rng.bounds
            out[path] = trial.suggest_int(path, int(low), int(high))
        else:
            low, high = rng.bounds
            out[path] = trial.suggest_float(path, low, high, log=rng.type == "log_uniform")
    return out


def decode(cfg: RunConfig, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored params -> config values (categorical JSON strings decoded)."""
    space = cfg.tune.space
    return {
        k: json.loads(v) if space[k].type == "categorical" else v
        for k, v in params.items()
        if k in space
    }


def checkpoints(total: int, count: int) -> list[int]:
    """The iterations after which a trial is scored: ``count`` evenly spaced, ending at
    ``total``."""
    return sorted({max(1, round(total * (j + 1) / count)) for j in range(count)})


def validation_tasks(cfg: RunConfig) -> tuple[list[WalkForwardTask], str]:
    """The held-out tasks cut after their validation split, and the data hash of the
    whole tasks (the data set later reports on them will count these trials against)."""
    from metatrade.evaluation.registry import data_hash
    from metatrade.evaluation.walkforward import cut_after, load_tasks
    from metatrade.training.task_sets import eval_tasks, make_loader

    loader = make_loader(cfg)
    tasks = load_tasks(loader, eval_tasks(cfg, loader))
    return [cut_after(t, "validation") for t in tasks], data_hash([t.arrays for t in tasks])


def score(cfg: RunConfig, learner: Any, tasks: list[WalkForwardTask]) -> pd.Series:
    """Pooled per-day returns of MAML@k<tune.steps> walking forward over ``tasks``."""
    from metatrade.evaluation.protocol import Start
    from metatrade.evaluation.walkforward import run_walkforward
    from metatrade.training.walkforward import fold_spec, make_adapter, make_config

    t = cfg.tune
    params = {k: v.detach().clone() for k, v in learner.params.items()}
    lrs = learner.inner_lrs
    lrs = None if lrs is None else {k: v.detach().clone() for k, v in lrs.items()}
    start = {"MAML": Start(learner.policy, params, lrs)}
    spec = fold_spec(t.fold_days, t.adapt_days, unit="days")
    wf = make_config(cfg, spec, references=(), bootstrap_samples=10, block_days=1.0)
    res = run_walkforward(start, tasks, make_adapter(cfg, t.steps), wf)
    return res.pooled.daily[f"MAML@k{t.steps}"]


def _sharpe(daily: pd.Series) -> float:
    r = daily.dropna().to_numpy()
    sd = r.std(ddof=1) if r.size > 1 else 0.0
    return float(r.mean() / sd) if sd > 1e-15 else 0.0


class _Objective:
    """The Optuna objective: meta-train one point, score it at each checkpoint, record it."""

    def __init__(
        self,
        cfg: RunConfig,
        tasks: list[WalkForwardTask],
        dhash: str,
        log: TrialLog,
        console: Console | None,
    ) -> None:
        self.cfg, self.tasks, self.dhash, self.log, self.console = cfg, tasks, dhash, log, console
        self.rows: list[dict[str, Any]] = []

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        from metatrade.training.build import make_family
        from metatrade.training.trainer import Trainer

        params = suggest(trial, self.cfg)
        total = self.cfg.meta.num_meta_iterations
        cfg = apply_overrides(self.cfg, {**params, "run.log_interval": total})
        trainer = Trainer(make_family(cfg), None, config=cfg, progress=False, tensorboard=False)
        state, value, daily, done = "complete", 0.0, pd.Series(dtype=float), 0
        for done in checkpoints(total, self.cfg.tune.checkpoints):
            trainer.meta_train(num_meta_iterations=done)
            daily = score(cfg, trainer.learner, self.tasks)
            value = _sharpe(daily)
            trial.report(value, step=done)
            if done < total and trial.should_prune():
                state = "pruned"
                break
        self._record(trial, cfg, params, daily, value, state, done)
        if state == "pruned":
            raise optuna.TrialPruned()
        return value

    def _record(
        self,
        trial: optuna.Trial,
        cfg: RunConfig,
        params: dict[str, Any],
        daily: pd.Series,
        value: float,
        state: str,
        done: int,
    ) -> None:
        extra = {
            "objective": value,
            "state": state,
            "iteration": done,
            "params": params,
            "optuna_trial": trial.number,
        }
        self.log.record(
            label=f"{trial.study.study_name}#{trial.number}",
            data_hash=self.dhash,
            split="validation",
            returns=daily,
            extra=extra,
            config_hash=run_config_hash(cfg),
        )
        self.rows.append(
            {
                "trial": trial.number,
                **params,
                "sharpe_per_day": value,
                "state": state,
                "iterations": done,
            }
        )
        if self.console is not None:
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
            )
            self.console.print(
                f"trial {trial.number}: {shown} -> Sharpe/day {value:+.4f} "
                f"({state} after {done} iterations)"
            )


def _study(cfg: RunConfig, log: TrialLog, dhash: str) -> optuna.Study:
    """The study in the registry's file (continued when it exists), TPE seeded from the
    run's seed and how many trials it already holds, median pruning."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = cfg.tune.study or f"{cfg.run.name or 'tune'}-{dhash}"
    study = optuna.create_study(
        storage=log.registry.url,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=cfg.tune.startup_trials),
    )
    # a continued study draws new points: the seed derives from the run's and the count
    seed = derive_seed(cfg.run.seed, "tune", len(study.trials)) % 2**32  # optuna: 32 bits
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    return study


def run_tune(
    cfg: RunConfig, *, out_dir: Path, n_trials: int | None = None, console: Console | None = None
) -> TuneResult:
    """``metatrade tune``: ``n_trials`` (default ``tune.n_trials``) Optuna trials of the
    config's search space, scored on validation (module docstring); writes
    ``<out_dir>/best.yaml`` and ``<out_dir>/tune.json``."""
    import optuna

    check_space(cfg)
    tasks, dhash = validation_tasks(cfg)
    log = trial_log(cfg, kind="tune", run=out_dir, run_dir=out_dir)
    study = _study(cfg, log, dhash)
    objective = _Objective(cfg, tasks, dhash, log, console)
    study.optimize(objective, n_trials=n_trials or cfg.tune.n_trials, catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ConfigError(f"tune: no trial of study {study.study_name} completed; add trials")
    best = max(done, key=lambda t: t.value if t.value is not None else -math.inf)
    params = decode(cfg, best.params)
    files = {
        "best": save_config(apply_overrides(cfg, params), Path(out_dir) / "best.yaml"),
        "json": atomic_write_text(
            Path(out_dir) / "tune.json",
            json.dumps(
                json_safe(
                    {
                        "study": study.study_name,
                        "data_hash": dhash,
                        "registry": str(log.registry.path),
                        "best": params,
                        "best_value": best.value,
                        "trials": objective.rows,
                    }
                ),
                indent=1,
            )
            + "\n",
        ),
    }
    return TuneResult(study.study_name, params, float(best.value or 0.0), objective.rows, files)
