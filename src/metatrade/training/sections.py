"""The sections of the run configuration (``RunConfig``'s fields), each a pydantic model or
the layer's own validated dataclass (``meta`` is ``metatrade.meta.config.MetaSettings``,
``objective`` is ``metatrade.exact.settings.ObjectiveSettings``, ``env`` is
``metatrade.market.config.EnvSettings``, ``data.splits`` is
``metatrade.data.splits.SplitConfig``, ``policy`` is ``NetworkConfig``), every field with a
default and a one-line description (``docs/configuration.md`` is the reference).
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from metatrade.agents.networks.config import NetworkConfig
from metatrade.agents.ppo_config import PPOHyperparameters
from metatrade.data.regime_config import RegimesConfig
from metatrade.data.splits import SplitConfig
from metatrade.evaluation.baselines import ClassicalConfig
from metatrade.evaluation.protocol_config import ProtocolSettings
from metatrade.exact.settings import ObjectiveSettings
from metatrade.meta.config import MetaConfig, MetaSettings


def check_task(name: str) -> str:
    """One task name, checked with the loader's own pattern (``metatrade.data.naming``)."""
    from metatrade.data.naming import parse_task_id

    return str(parse_task_id(name))


# Unknown keys are errors (a typo must not silently fall back to a default), and every
# number must be finite (`meta.lr: .inf` made the parameters infinite, issue #18).
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


def absolute_path(value: str | None) -> str | None:
    """A path as stored in a config: absolute (``~`` expanded, resolved against the working
    directory now), so a run read or resumed from another directory finds the same folder."""
    return None if value is None else os.path.abspath(os.path.expanduser(value))


class _Section(BaseModel):
    model_config = ConfigDict(**STRICT, validate_assignment=True)


PositiveInt = Field(gt=0)
# Seeds reach numpy, torch (int64), Optuna (32 bits) and ``metatrade.seeding.derive_seed``:
# the 32-bit range every one of them takes, and the usual range of a seed.
MAX_SEED = 2**32 - 1


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
    splits: SplitConfig | None = Field(
        None,
        description="time splits of the held-out tasks (adaptation = their train split, "
        "test = their test split); null = data.splits",
    )

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, v: list[str]) -> list[str]:
        return [check_task(t) for t in v]

    @field_validator("timeframes", mode="before")
    @classmethod
    def _timeframes_as_str(cls, v: Any) -> Any:
        return [str(t) for t in v] if isinstance(v, list) else v


class SyntheticEvalSection(_Section):
    """Held-out synthetic tasks with a seed of their own (the regime family, data.regimes)."""

    tasks: int = Field(
        0,
        ge=0,
        description="held-out tasks drawn with their own seed (from run.seed and task_set), "
        "written beside the training tasks; 0: none",
    )
    bars: int | None = Field(None, gt=100, description="bars per task; null = synthetic_bars")
    task_set: Literal["test", "validation"] = Field(
        "test",
        description="which held-out set (each its own seed): validation tasks to choose "
        "settings on, test tasks for the figures",
    )


class DataSection(_Section):
    """Where the bars come from and which tasks make up the distribution."""

    family: Literal["trading", "synthetic", "nav2d"] = Field(
        default="trading",
        description="task family: real OHLCV tasks, synthetic regime tasks, or 2D navigation",
    )
    data_dir: str | None = Field(
        default=None,
        description="directory of OHLCV files; null = the embedded sample data (a relative path "
        "is stored resolved against the working directory it was given in)",
    )
    tasks: list[str] | None = Field(
        default=None, description="tasks to use, 'Instrument:TF'; null = every task found"
    )
    heldout: HeldOutSection = Field(default_factory=HeldOutSection)
    splits: SplitConfig = Field(
        default_factory=SplitConfig,
        description="chronological cut of every task's bars (metatrade.data.splits.SplitConfig)",
    )
    strict: bool = Field(
        default=False,
        description="a file that cannot be used stops the run (default: skipped with a warning)",
    )
    timezone: str | None = Field(
        default=None,
        description="time zone of every instrument (naive timestamps, shown times); null = "
        "each instrument's (instruments.yaml, default its calendar's)",
    )
    instruments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="instrument -> instruments.yaml keys replacing the data folder's "
        "description (calendar, timezone, currency, lot_size, tick_size, costs, square_off)",
    )
    num_synthetic_tasks: int = Field(
        default=24, gt=0, description="synthetic family only: how many tasks to generate"
    )
    synthetic_bars: int = Field(
        default=4000, gt=100, description="synthetic family only: bars per task"
    )
    synthetic_heldout: int = Field(
        default=0,
        ge=0,
        description="synthetic family only: the last N generated tasks are held out",
    )
    synthetic_eval: SyntheticEvalSection = Field(
        default_factory=SyntheticEvalSection,
        description="synthetic family only: held-out tasks of their own seed and length",
    )
    regimes: RegimesConfig | None = Field(
        default=None,
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


@pydantic_dataclass(frozen=True, config=STRICT)
class PolicySection(NetworkConfig):
    """The policy network: ``metatrade.agents.networks.config.NetworkConfig`` (defined and
    validated there once; ``PPOConfig`` shares it)."""


@pydantic_dataclass(frozen=True, config=STRICT)
class MetaSection(MetaSettings):
    """MAML for RL: ``metatrade.meta.config.MetaSettings`` (every field, its default and its
    validation are defined there once) plus the number of meta-iterations. The seed is
    ``run.seed``, the run's one seed."""

    num_meta_iterations: int = Field(default=50, gt=0, description="outer-loop iterations")
    lr_schedule: Literal["constant", "linear"] = Field(
        default="constant",
        description="Adam / ProMP rates over the run: constant, or linear: falling from lr "
        "(and meta_sgd_lr) at the first iteration to 0 after num_meta_iterations (as "
        "Stable-Baselines3's linear schedule), so the last iterations average out the "
        "meta-gradient's task-sampling noise instead of following it",
    )

    @model_validator(mode="after")
    def _schedule_needs_a_rate(self) -> MetaSection:
        if self.lr_schedule != "constant" and self.optimizer == "trpo":
            raise ValueError(
                f"lr_schedule: {self.lr_schedule} schedules Adam's / ProMP's learning rate; "
                "TRPO has none (its step is a trust region): use optimizer: adam or promp, "
                "or lr_schedule: constant"
            )
        return self


@pydantic_dataclass(frozen=True, config=STRICT)
class PPOSection(PPOHyperparameters):
    """PPO: ``metatrade.agents.ppo_config.PPOHyperparameters`` (defined and validated there
    once) plus the run's budget and batch shape. The network comes from the ``policy``
    section and the seed from ``run.seed``."""

    total_timesteps: int = Field(
        default=100_000, gt=0, description="environment steps of `train` (and of the baseline)"
    )
    match_meta_budget: bool = Field(
        default=True,
        description="the multi-task PPO baseline gets as many env steps as meta-training used",
    )
    tasks_per_batch: int = Field(
        default=8, gt=0, description="tasks stepped together (the BatchEnv's T)"
    )
    episodes_per_task: int = Field(default=4, gt=0, description="parallel episodes per task (E)")


Baseline = Literal[
    "maml",
    "ppo",
    "pretrained",
    "random",
    "ar",
    "momentum",
    "reversal",
    "time_of_day",
    "classical_selected",
    "buy_and_hold",
    "flat",
]


@pydantic_dataclass(frozen=True, config=STRICT)
class EvaluationSection(ProtocolSettings):
    """The meta-test protocol: ``metatrade.evaluation.protocol_config.ProtocolSettings``
    (defined and validated there once) plus the rows of the table, the classical rows'
    settings, the stressed cost and how every evaluation trades a policy."""

    baselines: tuple[Baseline, ...] = Field(
        default=get_args(Baseline),
        description="rows of the results table (pretrained: the exact estimator's multi-task "
        "start on the same objective, when the run has one; ar, momentum, reversal, "
        "time_of_day, classical_selected: the classical adaptive rules, fitted on the rows "
        "the starts adapt on)",
    )
    classical: ClassicalConfig = Field(
        default_factory=ClassicalConfig,
        description="settings of the classical rows (metatrade.evaluation.baselines."
        "ClassicalConfig)",
    )
    stress_cost_bps: float = Field(
        default=2.0, ge=0, description="stressed cost: extra basis points per side in reports"
    )
    actions: Literal["sample", "mode"] = Field(
        default="sample",
        description="how every evaluation trades a policy (protocol test windows and "
        "backtests, backtest, walkforward, signal): sample its actions (seeded: the stochastic "
        "policy the exact objective optimises) or take its most probable action",
    )


class RunSection(_Section):
    """Bookkeeping: seed, where outputs go, how often to log and checkpoint."""

    seed: int = Field(
        default=0,
        ge=0,
        le=MAX_SEED,
        description="the one seed every RNG stream derives from, 0 to 2**32 - 1",
    )
    out_dir: str | None = Field(
        default=None,
        description="the run directory; null = runs/<name>-seed<seed> (a relative path is "
        "stored resolved against the working directory it was given in)",
    )
    name: str | None = Field(
        default=None, description="run name used for the default run directory; null = data.family"
    )
    log_interval: int = Field(default=1, gt=0, description="iterations between log lines")
    checkpoint_interval: int = Field(default=5, gt=0, description="iterations between checkpoints")
    torch_threads: int = Field(
        default=1,
        ge=0,
        description="torch intra-op threads (1 is fastest for small policies); 0 = torch default",
    )
    keep_freed_memory: bool = Field(
        default=True,
        description="keep freed memory in the process for reuse (glibc mallopt; ~17% faster "
        "meta-iterations, resident memory stays at its peak)",
    )
    backend: Literal["batched", "local", "ray"] = Field(
        default="batched",
        description="where a meta-iteration's per-task work runs: batched (all tasks in one "
        "vmapped computation here, fastest on one machine), local (per-task units here, the "
        "reference ray is bitwise equal to) or ray (per-task units on Ray actors; "
        "pip install 'metatrade[ray]'; docs/distributed.md)",
    )
    workers: int = Field(default=2, gt=0, description="Ray actors (run.backend: ray), 1 CPU each")
    address: str | None = Field(
        default=None,
        description="Ray cluster to join: 'auto' (the one `ray start` runs here) or host:port; "
        "null: start a local Ray instance",
    )
    registry: str | None = Field(
        default=None,
        description="the trial registry (SQLite) every evaluation and tuning trial is counted "
        "in; null = trials.sqlite in the folder holding the run directory (runs/trials.sqlite)",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        default="cpu",
        description="device of the policy parameters and the meta-step's tensors (envs stay "
        "numpy on the CPU); auto: cuda when available, else cpu",
    )

    @field_validator("out_dir")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return absolute_path(v)


@pydantic_dataclass(frozen=True, config=STRICT)
class ObjectiveSection(ObjectiveSettings):
    """The exact objective: ``metatrade.exact.settings.ObjectiveSettings`` (defined and
    validated there once), here with finite numbers only."""


class ParamRange(_Section):
    """One dimension of the search space of ``metatrade tune`` (Optuna's distributions)."""

    type: Literal["log_uniform", "uniform", "int", "categorical"] = Field(
        default=...,
        description="log_uniform / uniform (floats), int (integers), categorical (choices)",
    )
    low: float | None = Field(default=None, description="lower bound (log_uniform, uniform, int)")
    high: float | None = Field(default=None, description="upper bound (log_uniform, uniform, int)")
    choices: list[Any] | None = Field(
        default=None, description="the values to choose from (categorical)"
    )

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

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of a numeric range (``_bounds`` made sure both are set)."""
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} range has no low/high bounds")
        return self.low, self.high


class TuneSection(_Section):
    """``metatrade tune``: the search space and how each trial is scored (on validation)."""

    n_trials: int = Field(default=20, gt=0, description="trials of a `metatrade tune` run")
    space: dict[str, ParamRange] = Field(
        default_factory=dict,
        description="parameter path (e.g. meta.inner_lr) -> its range; every path must be a "
        "key of this config",
    )
    study: str | None = Field(
        default=None, description="Optuna study name; null = <config name>-<data hash>"
    )
    checkpoints: int = Field(
        default=2,
        gt=0,
        description="validation scores per trial during meta-training (for pruning)",
    )
    steps: int = Field(default=1, ge=0, description="inner steps before every validation fold")
    fold_days: int = Field(default=5, gt=0, description="sessions per validation fold")
    adapt_days: int = Field(default=10, gt=0, description="sessions of each adaptation window")
    startup_trials: int = Field(
        default=2,
        ge=0,
        description="trials that are never pruned (MedianPruner's n_startup_trials)",
    )


def meta_section_from(meta_config: MetaConfig) -> MetaSection:
    """A run config ``meta`` section holding a MetaConfig's settings (e.g. a MAMLAgent's;
    its seed is ``run.seed``)."""
    return MetaSection(**{f.name: getattr(meta_config, f.name) for f in fields(MetaSettings)})
