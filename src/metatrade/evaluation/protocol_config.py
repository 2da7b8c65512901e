"""The meta-test protocol's inputs: ``Start`` (a starting point for adaptation) and
``ProtocolConfig`` (see ``metatrade.evaluation.protocol`` for the protocol itself)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from pydantic import ConfigDict, Field, SkipValidation, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import Tensor, nn

from metatrade.agents.networks.base import Policy
from metatrade.data.synthetic import OracleRule
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.backtest import buy_and_hold, flat
from metatrade.evaluation.baselines import ClassicalConfig, check_names
from metatrade.exact.settings import ObjectiveSettings
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.config import AdaptationConfig

Params = dict[str, Tensor]


@dataclass(frozen=True)
class Start:
    """A starting point for adaptation: a policy module and its parameters (no task axis);
    ``inner_lrs`` are Meta-SGD per-parameter step sizes when the start learned them."""

    policy: Policy
    params: Params
    inner_lrs: Params | None = None


def module_params(policy: nn.Module) -> Params:
    """A module's parameters as a detached dict (the start of a trained network)."""
    return {k: v.detach().clone() for k, v in policy.named_parameters()}


def random_start(policy: Policy, seed: int) -> Start:
    """A freshly initialised network of the same architecture as ``policy``, seeded."""
    from metatrade.agents.policies import policy_from_spec

    dtype = next(policy.parameters()).dtype
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = policy_from_spec(policy.spec, dtype=dtype)
    return Start(fresh, module_params(fresh))


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ProtocolSettings:
    """The meta-test protocol's settings a run config sets (its ``evaluation`` section is
    this class plus the rows of the table: each field defined and validated here once)."""

    adaptation_steps: tuple[int, ...] = Field(
        default=(0, 1, 2, 3),
        description="k inner steps to report (adaptation runs to max(k), evaluating after each)",
    )
    adaptation_episodes: int = Field(
        default=10,
        gt=0,
        description="episodes (exact: windows) per task and inner step on a task's adaptation "
        "window (train split)",
    )
    test_episodes: int = Field(
        default=10,
        gt=0,
        description="random test windows per task (the same for every start and k)",
    )
    bootstrap_samples: int = Field(
        default=1000, gt=0, description="bootstrap resamples for 95% CIs"
    )

    @field_validator("adaptation_steps")
    @classmethod
    def _steps(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or min(v) < 0:
            raise ValueError(f"expected a non-empty list of steps k >= 0, got {list(v)}")
        return tuple(sorted(set(v)))


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class ProtocolConfig(ProtocolSettings):
    """Knobs of the meta-test protocol: the run config's settings (``ProtocolSettings``) and
    what the run derives for it (names match the run config's sections)."""

    episode_length: int = 256
    """bars per adaptation episode (shortened to fit the shortest train split)"""
    test_episode_length: int = 256
    """bars per test window (shortened to fit half the shortest test split)"""
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)
    """the inner loop every start is adapted with (the run's ``meta`` settings, its estimator
    included); its batch size is ``adaptation_episodes``"""
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    """the exact objective's settings (with ``adaptation.estimator: exact``)"""
    deterministic_test: bool = False
    """test windows and backtests with the policy's mode instead of sampled actions (the run
    config's ``evaluation.actions: mode``)"""
    backtest: bool = True
    """also run a whole-split backtest per task, start and k"""
    references: tuple[str, ...] = ("buy_and_hold", "flat")
    classical: tuple[str, ...] = ()
    """classical adaptive rows (``baselines.CLASSICAL``: ar, momentum, reversal, time_of_day,
    classical_selected), fitted on the rows the starts adapt on"""
    classical_settings: ClassicalConfig = Field(default_factory=ClassicalConfig)
    """their settings (AR order, momentum horizons, time-of-day buckets)"""
    confidence: float = 0.95
    seed: int = 0
    adaptation_split: str = "train"
    test_split: str = "test"
    env: TradingEnvConfig = Field(default_factory=TradingEnvConfig)
    oracle: SkipValidation[Mapping[TaskId, OracleRule] | None] = None
    """synthetic tasks' true rules (AR(1) ``RegimeParams`` or regime ``TaskRule``): report
    returns as a fraction of the oracle's"""
    oracle_threshold: float = 0.0
    """oracle trades only when |expected next return| exceeds this (fraction of price)"""

    @field_validator("references")
    @classmethod
    def _known_references(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(v) - set(REFERENCES)
        if unknown:
            raise ValueError(
                f"ProtocolConfig.references: unknown {sorted(unknown)}; use {sorted(REFERENCES)}"
            )
        return v

    @field_validator("classical")
    @classmethod
    def _known_classical(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_names(v, "ProtocolConfig.classical")


REFERENCES = {"buy_and_hold": buy_and_hold, "flat": flat}
REF_LABEL = {"buy_and_hold": "buy-and-hold", "flat": "flat"}
