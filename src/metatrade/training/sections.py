"""The sections of the run configuration (``RunConfig``'s fields), each a pydantic model or
the layer's own validated dataclass (``meta`` is ``metatrade.meta.config.MetaConfig``,
``objective`` is ``metatrade.exact.settings.ObjectiveSettings``), every field with a default
and a one-line description (``docs/configuration.md`` is the reference).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from metatrade.agents.networks.config import NetworkConfig
from metatrade.agents.ppo_config import PPOHyperparameters
from metatrade.data.regime_config import RegimesConfig
from metatrade.exact.settings import ObjectiveSettings
from metatrade.meta.config import MetaConfig


def check_task(name: str) -> str:
    """One task name, checked with the loader's own pattern (``metatrade.data.naming``)."""
    from metatrade.data.naming import parse_task_id

    return str(parse_task_id(name))


# Unknown keys are errors (a typo must not silently fall back to a default), and every
# number must be finite (`meta.lr: .inf` made the parameters infinite, issue #18).
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


def absolute_path(value: str | None) -> str | None:
    """A path as stored in a config: absolute (``~`` expanded, resolved against the working
    directory now), so a run read or resumed from another directory finds the same folder."""
    return None if value is None else os.path.abspath(os.path.expanduser(value))


class _Section(BaseModel):
    model_config = ConfigDict(**_STRICT, validate_assignment=True)


PositiveInt = Field(gt=0)
# Seeds reach numpy, torch (int64) and derived streams (seed * 1_000_003 + ...): the
# 32-bit range every one of them takes, and the usual range of a seed.
MAX_SEED = 2**32 - 1


class SplitsSection(_Section):
    """Chronological cut of every task's bars (metatrade.data.splits.SplitConfig)."""

    train: float = Field(0.7, gt=0, le=1, description="fraction of bars for (meta-)training")
    validation: float = Field(0.15, ge=0, lt=1, description="fraction for model selection")
    test: float = Field(0.15, ge=0, lt=1, description="out-of-sample fraction for evaluation")
    embargo_bars: int = Field(0, ge=0, description="rows skipped before validation and test")
    train_end: str | None = Field(None, description="date ending train (overrides fractions)")
    validation_end: str | None = Field(None, description="date ending validation")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitsSection:
        total = self.train + self.validation + self.test
        if self.train_end is None and abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"train + validation + test must sum to 1, got {self.train} + "
                f"{self.validation} + {self.test} = {total:g}"
            )
        return self


class HeldOutSection(_Section):
    """Tasks never seen in (meta-)training: the test of the method."""

    instruments: list[str] = Field(
        default_factory=list, description="every task of these instruments is held out"
    )
    timeframes: list[str] = Field(
        default_factory=list, description="every task of these timeframes (minutes) is held out"
    )
    tasks: list[str] = Field(
        default_factory=list, description="individual held-out tasks, 'Instrument:TF'"
    )

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, v: list[str]) -> list[str]:
        return [check_task(t) for t in v]

    @field_validator("timeframes", mode="before")
    @classmethod
    def _timeframes_as_str(cls, v: Any) -> Any:
        return [str(t) for t in v] if isinstance(v, list) else v


class DataSection(_Section):
    """Where the bars come from and which tasks make up the distribution."""

    family: Literal["trading", "synthetic", "nav2d"] = Field(
        "trading",
        description="task family: real OHLCV tasks, synthetic regime tasks, or 2D navigation",
    )
    data_dir: str | None = Field(
        None,
        description="directory of OHLCV files; null = the embedded sample data (a relative path "
        "is stored resolved against the working directory it was given in)",
    )
    tasks: list[str] | None = Field(
        None, description="tasks to use, 'Instrument:TF'; null = every task found"
    )
    heldout: HeldOutSection = Field(default_factory=HeldOutSection)
    splits: SplitsSection = Field(default_factory=SplitsSection)
    strict: bool = Field(
        False,
        description="a file that cannot be used stops the run (default: skipped with a warning)",
    )
    timezone: str | None = Field(
        None,
        description="time zone of every instrument (naive timestamps, shown times); null = "
        "each instrument's (instruments.yaml, default its calendar's)",
    )
    instruments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="instrument -> instruments.yaml keys replacing the data folder's "
        "description (calendar, timezone, currency, lot_size, tick_size, costs, square_off)",
    )
    num_synthetic_tasks: int = Field(
        24, gt=0, description="synthetic family only: how many tasks to generate"
    )
    synthetic_bars: int = Field(4000, gt=100, description="synthetic family only: bars per task")
    synthetic_heldout: int = Field(
        0, ge=0, description="synthetic family only: the last N generated tasks are held out"
    )
    regimes: RegimesConfig | None = Field(
        None,
        description="synthetic family only: the regime family's kinds, weights and parameter "
        "ranges (metatrade.data.regimes); null: the AR(1) family",
    )

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [check_task(t) for t in v]

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return absolute_path(v)


@pydantic_dataclass(frozen=True, config=_STRICT)
class PolicySection(NetworkConfig):
    """The policy network: ``metatrade.agents.networks.config.NetworkConfig`` (defined and
    validated there once; ``PPOConfig`` shares it)."""


@pydantic_dataclass(frozen=True, config=_STRICT)
class MetaSection(MetaConfig):
    """MAML for RL: ``metatrade.meta.config.MetaConfig`` (every field, its default and its
    validation are defined there once) plus the number of meta-iterations. The seed is
    ``run.seed``."""

    num_meta_iterations: int = Field(50, gt=0, description="outer-loop iterations")


@pydantic_dataclass(frozen=True, config=_STRICT)
class PPOSection(PPOHyperparameters):
    """PPO: ``metatrade.agents.ppo_config.PPOHyperparameters`` (defined and validated there
    once) plus the run's budget and batch shape. The network comes from the ``policy``
    section and the seed from ``run.seed``."""

    total_timesteps: int = Field(
        100_000, gt=0, description="environment steps of `train` (and of the baseline)"
    )
    match_meta_budget: bool = Field(
        True,
        description="the multi-task PPO baseline gets as many env steps as meta-training used",
    )
    tasks_per_batch: int = Field(8, gt=0, description="tasks stepped together (the BatchEnv's T)")
    episodes_per_task: int = Field(4, gt=0, description="parallel episodes per task (E)")


Baseline = Literal[
    "maml", "ppo", "pretrained", "random", "ar", "momentum", "reversal", "time_of_day",
    "classical_selected", "buy_and_hold", "flat",
]  # fmt: skip


class ClassicalSection(_Section):
    """The classical adaptive rows (metatrade.evaluation.baselines.ClassicalConfig)."""

    ar_order: int = Field(1, gt=0, description="p of the plug-in AR(p) row")
    horizons: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32],
        description="momentum / reversal lookbacks (bars) tried on the adaptation window",
    )
    buckets: int = Field(6, gt=0, description="time-of-day buckets per trading session")

    @field_validator("horizons")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError(f"expected a non-empty list of horizons >= 1 bar, got {v}")
        return v


class EvaluationSection(_Section):
    """The meta-test protocol (metatrade.evaluation.protocol)."""

    adaptation_steps: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 3], description="k inner steps to report"
    )
    adaptation_episodes: int = Field(
        10, gt=0, description="episodes per inner step on a task's adaptation window"
    )
    test_episodes: int = Field(10, gt=0, description="evaluation episodes per task and k")
    bootstrap_samples: int = Field(1000, gt=0, description="bootstrap resamples for 95% CIs")
    baselines: list[Baseline] = Field(
        default_factory=lambda: list(get_args(Baseline)),
        description="rows of the results table (pretrained: the exact estimator's multi-task "
        "start on the same objective, when the run has one; ar, momentum, reversal, "
        "time_of_day, classical_selected: the classical adaptive rules, fitted on the rows "
        "the starts adapt on)",
    )
    classical: ClassicalSection = Field(
        default_factory=ClassicalSection, description="settings of the classical rows"
    )
    stress_cost_bps: float = Field(
        2.0, ge=0, description="stressed cost: extra basis points per side in reports"
    )
    actions: Literal["sample", "mode"] = Field(
        "sample",
        description="how every evaluation trades a policy (protocol test windows and "
        "backtests, backtest, walkforward, signal): sample its actions (seeded: the stochastic "
        "policy the exact objective optimises) or take its most probable action",
    )

    @field_validator("adaptation_steps")
    @classmethod
    def _non_negative(cls, v: list[int]) -> list[int]:
        if not v or any(k < 0 for k in v):
            raise ValueError(f"expected a non-empty list of steps >= 0, got {v}")
        return sorted(set(v))


class RunSection(_Section):
    """Bookkeeping: seed, where outputs go, how often to log and checkpoint."""

    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="the one seed every RNG stream derives from, 0 to 2**32 - 1",
    )
    out_dir: str | None = Field(
        None,
        description="the run directory; null = runs/<name>-seed<seed> (a relative path is "
        "stored resolved against the working directory it was given in)",
    )
    name: str | None = Field(
        None, description="run name used for the default run directory; null = data.family"
    )
    log_interval: int = Field(1, gt=0, description="iterations between log lines")
    checkpoint_interval: int = Field(5, gt=0, description="iterations between checkpoints")
    torch_threads: int = Field(
        1,
        ge=0,
        description="torch intra-op threads (1 is fastest for small policies); 0 = torch default",
    )
    keep_freed_memory: bool = Field(
        True,
        description="keep freed memory in the process for reuse (glibc mallopt; ~17% faster "
        "meta-iterations, resident memory stays at its peak)",
    )
    backend: Literal["batched", "local", "ray"] = Field(
        "batched",
        description="where a meta-iteration's per-task work runs: batched (all tasks in one "
        "vmapped computation here, fastest on one machine), local (per-task units here, the "
        "reference ray is bitwise equal to) or ray (per-task units on Ray actors; "
        "pip install 'metatrade[ray]'; docs/distributed.md)",
    )
    workers: int = Field(2, gt=0, description="Ray actors (run.backend: ray), 1 CPU each")
    address: str | None = Field(
        None,
        description="Ray cluster to join: 'auto' (the one `ray start` runs here) or host:port; "
        "null: start a local Ray instance",
    )
    registry: str | None = Field(
        None,
        description="the trial registry (SQLite) every evaluation and tuning trial is counted "
        "in; null = trials.sqlite in the folder holding the run directory (runs/trials.sqlite)",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="device of the policy parameters and the meta-step's tensors (envs stay "
        "numpy on the CPU); auto: cuda when available, else cpu",
    )

    @field_validator("out_dir")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return absolute_path(v)


@pydantic_dataclass(frozen=True, config=_STRICT)
class ObjectiveSection(ObjectiveSettings):
    """The exact objective: ``metatrade.exact.settings.ObjectiveSettings`` (defined and
    validated there once), here with finite numbers only."""


class ParamRange(_Section):
    """One dimension of the search space of ``metatrade tune`` (Optuna's distributions)."""

    type: Literal["log_uniform", "uniform", "int", "categorical"] = Field(
        ..., description="log_uniform / uniform (floats), int (integers), categorical (choices)"
    )
    low: float | None = Field(None, description="lower bound (log_uniform, uniform, int)")
    high: float | None = Field(None, description="upper bound (log_uniform, uniform, int)")
    choices: list[Any] | None = Field(None, description="the values to choose from (categorical)")

    @model_validator(mode="after")
    def _bounds(self) -> ParamRange:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty list of choices")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high, got low={self.low}, high={self.high}")
        if self.type == "log_uniform" and self.low <= 0:
            raise ValueError(f"log_uniform needs low > 0, got {self.low}")
        return self


class TuneSection(_Section):
    """``metatrade tune``: the search space and how each trial is scored (on validation)."""

    n_trials: int = Field(20, gt=0, description="trials of a `metatrade tune` run")
    space: dict[str, ParamRange] = Field(
        default_factory=dict,
        description="parameter path (e.g. meta.inner_lr) -> its range; every path must be a "
        "key of this config",
    )
    study: str | None = Field(
        None, description="Optuna study name; null = <config name>-<data hash>"
    )
    checkpoints: int = Field(
        2, gt=0, description="validation scores per trial during meta-training (for pruning)"
    )
    steps: int = Field(1, ge=0, description="inner steps before every validation fold")
    fold_days: int = Field(5, gt=0, description="sessions per validation fold")
    adapt_days: int = Field(10, gt=0, description="sessions of each adaptation window")
    startup_trials: int = Field(
        2, ge=0, description="trials that are never pruned (MedianPruner's n_startup_trials)"
    )


def meta_section_from(meta_config: MetaConfig) -> MetaSection:
    """A run config ``meta`` section holding a MetaConfig's values (e.g. a MAMLAgent's)."""
    return MetaSection(**asdict(meta_config))
