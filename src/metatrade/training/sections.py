"""The sections of the run configuration (``RunConfig``'s fields), each a pydantic model or
the layer's own validated dataclass (``meta`` is ``metatrade.meta.config.MetaConfig``,
``objective`` is ``metatrade.market.family.ObjectiveSettings``), every field with a default
and a one-line description (``docs/configuration.md`` is the reference).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from metatrade.agents.networks.config import NetworkConfig
from metatrade.agents.ppo_config import PPOHyperparameters
from metatrade.data.regime_config import RegimesConfig
from metatrade.meta.config import MetaConfig


def check_task(name: str) -> str:
    """One task name, checked with the loader's own pattern (``metatrade.data.naming``)."""
    from metatrade.data.naming import parse_task_id

    return str(parse_task_id(name))


class _Section(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


PositiveInt = Field(gt=0)


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
        None, description="directory of OHLCV files; null = the embedded sample data"
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


class CostsSection(_Section):
    """What one order costs (metatrade.market.costs.CostModel)."""

    entry_fee: float = Field(25.0, ge=0, description="INR per entry order")
    exit_fee: float = Field(35.0, ge=0, description="INR per exit order")
    proportional_bps: float = Field(0.0, ge=0, description="basis points of notional per order")
    slippage_bps: float = Field(0.0, ge=0, description="fill price moved against the trader, bps")


class ShapingSection(_Section):
    """Reward shaping added to the P&L reward (metatrade.market.config.RewardShaping)."""

    invalid_action_penalty: float = Field(0.0, ge=0, description="per rejected action")
    losing_hold_penalty: float = Field(0.0, ge=0, description="per bar holding a losing position")
    winning_close_bonus: float = Field(0.0, ge=0, description="per close with net P&L > 0")
    drawdown_penalty: float = Field(0.0, ge=0, description="times the drawdown from peak equity")


class EnvSection(_Section):
    """The simulated market (metatrade.market.config.TradingEnvConfig)."""

    lookback: int = Field(32, gt=0, description="bars in the observation window")
    episode_length: int = Field(256, gt=0, description="bars per training episode")
    initial_capital: float = Field(1_000_000.0, gt=0, description="starting equity, INR")
    square_off: bool = Field(False, description="close open positions at each session's end")
    ruin_fraction: float = Field(
        0.5, ge=0, lt=1, description="episode terminates below this fraction of capital"
    )
    position_fraction: float = Field(1.0, gt=0, description="fraction of equity per entry")
    observation: Literal["full", "position"] = Field(
        "full",
        description="account part of the observation: the 4 account values, or the position "
        "only (needed by meta.estimator: exact)",
    )
    costs: CostsSection = Field(default_factory=CostsSection)
    shaping: ShapingSection = Field(default_factory=ShapingSection)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PolicySection(NetworkConfig):
    """The policy network: ``metatrade.agents.networks.config.NetworkConfig`` (defined and
    validated there once; ``PPOConfig`` shares it)."""


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MetaSection(MetaConfig):
    """MAML for RL: ``metatrade.meta.config.MetaConfig`` (every field, its default and its
    validation are defined there once) plus the number of meta-iterations. The seed is
    ``run.seed``."""

    num_meta_iterations: int = Field(50, gt=0, description="outer-loop iterations")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
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
    baselines: list[Literal["maml", "ppo", "pretrained", "random", "buy_and_hold", "flat"]] = Field(
        default_factory=lambda: ["maml", "ppo", "pretrained", "random", "buy_and_hold", "flat"],
        description="rows of the results table (pretrained: the exact estimator's multi-task "
        "start on the same objective, when the run has one)",
    )
    stress_cost_bps: float = Field(
        2.0, ge=0, description="stressed cost: extra basis points per side in reports"
    )

    @field_validator("adaptation_steps")
    @classmethod
    def _non_negative(cls, v: list[int]) -> list[int]:
        if not v or any(k < 0 for k in v):
            raise ValueError(f"expected a non-empty list of steps >= 0, got {v}")
        return sorted(set(v))


class RunSection(_Section):
    """Bookkeeping: seed, where outputs go, how often to log and checkpoint."""

    seed: int = Field(0, ge=0, description="the one seed every RNG stream derives from")
    out_dir: str | None = Field(
        None, description="the run directory; null = runs/<name>-seed<seed>"
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
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="device of the policy parameters and the meta-step's tensors (envs stay "
        "numpy on the CPU); auto: cuda when available, else cpu",
    )


def meta_section_from(meta_config: MetaConfig) -> MetaSection:
    """A run config ``meta`` section holding a MetaConfig's values (e.g. a MAMLAgent's)."""
    return MetaSection(**asdict(meta_config))
