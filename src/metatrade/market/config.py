"""Configuration shared by TradingEnv and BatchTradingEnv (one dataclass, typed, defaulted).

Both environments read the same config so that they implement the same MDP; the
equivalence test relies on it. ``EnvSettings`` is the part a run config sets (its ``env``
section is that class) and ``TradingEnvConfig`` extends it with what only code sets; both
are validated pydantic dataclasses, so each field, its default and its check are written
here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, SkipValidation, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from metatrade.data.task_arrays import TaskArrays
from metatrade.market.costs import (
    COST_KEYS,
    CostModel,
    InstrumentSpec,
    cost_model,
    instrument_spec,
)
from metatrade.market.sizing import FixedFractionSizer, PositionSizer

ACCOUNT_DIM = 4  # position, unrealised P&L / capital, equity / capital - 1, bars held / scale
ACCOUNT_NAMES = ("position", "unrealised_pnl_frac", "equity_return", "bars_held_scaled")

_STRICT = ConfigDict(extra="forbid")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class RewardShaping:
    """Optional shaping terms added to the P&L reward; a coefficient of 0 switches a term off.

    reward = pnl_reward
             - invalid_action_penalty * [the action was rejected]
             - losing_hold_penalty    * [a position is open and its unrealised P&L < 0]
             + winning_close_bonus    * [the agent's close realised a trade with net P&L > 0]
             - drawdown_penalty       * (1 - equity / running peak equity of the episode)
    """

    invalid_action_penalty: float = Field(default=0.0, ge=0, description="per rejected action")
    losing_hold_penalty: float = Field(
        default=0.0, ge=0, description="per bar holding a losing position"
    )
    winning_close_bonus: float = Field(default=0.0, ge=0, description="per close with net P&L > 0")
    drawdown_penalty: float = Field(
        default=0.0, ge=0, description="times the drawdown from peak equity"
    )


@pydantic_dataclass(frozen=True, config=_STRICT)
class EnvSettings:
    """The trading MDP as a run config sets it: the ``env`` section is this class (plus
    ``position_fraction``, the sizer it names), every field defined and validated here once;
    ``TradingEnvConfig`` adds what only code sets."""

    lookback: int = Field(
        default=32, gt=0, description="bars of features in the observation window (L)"
    )
    episode_length: int | None = Field(
        default=256,
        gt=0,
        description="steps per training episode (a random window); null: backtest the whole "
        "split (code only: a run config needs a length)",
    )
    initial_capital: float = Field(
        default=1_000_000.0, gt=0, description="starting equity, in each instrument's currency"
    )
    square_off: bool = Field(
        default=False,
        description="close open positions at each session's end (instruments with "
        "square_off: session_end, the default of exchange calendars; none for 24/5 and 24/7 "
        "markets): squares_off",
    )
    ruin_fraction: float = Field(
        default=0.5, ge=0, lt=1, description="episode terminates below this fraction of capital"
    )
    observation: Literal["full", "position"] = Field(
        default="full",
        description="account part of the observation: the 4 ACCOUNT_NAMES, or the position "
        "-1/0/+1 only (no path dependence: metatrade.exact computes the expected P&L of the "
        "same policy by a recursion over positions; meta.estimator: exact needs it)",
    )
    actions: Literal["orders", "target"] = Field(
        default="orders",
        description="action space (metatrade.market.rules): the five orders, Discrete(5), a "
        "reversal takes two bars; or target, Discrete(3): the next position short / flat / "
        "long, a reversal in one bar, both legs costed",
    )
    features: tuple[str, ...] | None = Field(
        default=None,
        description="feature columns the observation window holds, by name "
        "(TaskArrays.select_features); null: the task arrays' columns as given (a "
        "DataLoader's: the 22 standard features)",
    )
    costs: CostModel | None = Field(
        default=None,
        description="costs of every instrument: a CostModel, a preset name or terms "
        "(metatrade.market.costs.cost_model); null: each task's own (its instruments.yaml "
        "costs), CostModel() (the origin's) for arrays without one",
    )
    shaping: RewardShaping = Field(default_factory=RewardShaping)

    @field_validator("features")
    @classmethod
    def _each_feature_once(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"features={list(v)}: name each feature once, at least one")
        return v

    @field_validator("costs", mode="before")
    @classmethod
    def _cost_forms(cls, v: Any) -> Any:
        """A preset name or a mapping of terms becomes its ``CostModel``; a mapping with an
        unknown key goes on with that key alone, so the error names it (and the key meant)."""
        if isinstance(v, Mapping) and not set(v) <= COST_KEYS:
            return {k: v[k] for k in set(v) - COST_KEYS}
        return v if v is None or isinstance(v, CostModel) else cost_model(v)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class TradingEnvConfig(EnvSettings):
    """Everything that defines the trading MDP besides the bars themselves: the settings a
    run config sets (``EnvSettings``) and what only code sets (below)."""

    split: str = "train"
    """rows episodes trade in: "train", "validation", "test" or "all" (TaskArrays.splits)"""
    bars_held_scale: float = 100.0
    """bars held is divided by this in the observation"""
    spec: SkipValidation[InstrumentSpec | None] = None
    """lot size of every instrument; None = each task's own (its ``lot_size``), else 1"""
    instruments: SkipValidation[dict[str, tuple[CostModel, InstrumentSpec]]] = Field(
        default_factory=dict
    )
    """instrument name -> (CostModel, InstrumentSpec) overriding ``costs`` and ``spec``"""
    sizer: SkipValidation[PositionSizer] = Field(default_factory=FixedFractionSizer)
    """entry size (needs ``units`` and ``units_array``); default: all equity, whole lots"""
    liquidate_at_end: bool = False
    """close a position still open when an episode ends (ruin or its last bar) at that bar's
    close, paying the exit (``BacktestingEngine.liquidate``), and report the equity then in
    ``info["final_equity"]``: what every evaluation ledger does, so every cost is counted"""

    @property
    def account_names(self) -> tuple[str, ...]:
        """Names of the account entries that follow the feature window in an observation."""
        return ACCOUNT_NAMES if self.observation == "full" else ACCOUNT_NAMES[:1]

    @property
    def account_dim(self) -> int:
        """How many account entries follow the feature window (4 "full", 1 "position")."""
        return len(self.account_names)

    def market_for(self, task: TaskArrays | str) -> tuple[CostModel, InstrumentSpec]:
        """(costs, lot specification) a task trades with: ``instruments[name]``, else
        ``costs`` / ``spec`` when set, else the task's own market (``TaskArrays.market``)."""
        name = task if isinstance(task, str) else task.task.instrument
        if name in self.instruments:
            return self.instruments[name]
        market = None if isinstance(task, str) else task.market
        costs = self.costs
        if costs is None:
            costs = CostModel() if market is None else cost_model(market.instrument.cost_spec)
        spec = self.spec
        if spec is None:
            spec = InstrumentSpec(name) if market is None else instrument_spec(market.instrument)
        return costs, spec

    def squares_off(self, arrays: TaskArrays) -> bool:
        """Whether positions on ``arrays`` are closed at each session's end: ``square_off``
        and the instrument allows it (``square_off: session_end``)."""
        market = arrays.market
        return self.square_off and (market is None or market.instrument.square_off != "none")

    def with_overrides(self, **overrides: Any) -> TradingEnvConfig:
        """A copy with fields replaced; unknown names raise with the list of valid ones."""
        if not overrides:
            return self
        valid = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"unknown TradingEnvConfig fields {unknown}; valid: {sorted(valid)}")
        return replace(self, **overrides)


def episode_bounds(arrays: TaskArrays, config: TradingEnvConfig) -> tuple[int, int, int]:
    """(first start, last start, split stop) of episodes of ``config`` on ``arrays``.

    An episode starting on bar s observes bars s-L+1..s and steps one bar at a time to bar
    ``s + episode_length`` (training) or to the split's last bar ``stop - 1`` (backtest,
    ``episode_length=None``; default start = first). Lookback rows may precede the split
    (they are the past, so causal); traded bars never leave it.
    """
    lo, hi = arrays.split_range(config.split)
    first = max(lo, config.lookback - 1)
    last = hi - 2 if config.episode_length is None else hi - 1 - config.episode_length
    if last < first:
        raise ValueError(
            f"task {arrays.task}: split {config.split!r} has rows [{lo}, {hi}) but an episode "
            f"needs lookback {config.lookback} - 1 + episode_length {config.episode_length} + 1 "
            "bars; use a shorter episode_length/lookback or another split"
        )
    return first, last, hi


def episode_end(start: int, stop: int, config: TradingEnvConfig) -> int:
    """Index of the last bar an episode starting at ``start`` reaches (truncation there)."""
    return stop - 1 if config.episode_length is None else start + config.episode_length


def validate_arrays(arrays: TaskArrays) -> None:
    """Refuse arrays the envs cannot trade, naming the field and the fix."""
    n = len(arrays.close)
    feats = arrays.features
    if feats.ndim != 2 or feats.shape[0] != n:
        raise ValueError(
            f"task {arrays.task}: features shape {feats.shape} must be [N={n}, F] aligned with close"
        )
    for name in ("open", "close", "session_end", "timestamps"):
        if len(getattr(arrays, name)) != n:
            raise ValueError(
                f"task {arrays.task}: {name} has {len(getattr(arrays, name))} rows, close {n}"
            )
    if not np.isfinite(feats).all():
        row = int(np.argwhere(~np.isfinite(feats))[0, 0])
        raise ValueError(
            f"task {arrays.task}: features row {row} is not finite; drop warm-up rows or fill NaNs"
        )
    prices = np.concatenate([arrays.open, arrays.close])
    if not (np.isfinite(prices).all() and (prices > 0).all()):
        raise ValueError(f"task {arrays.task}: open/close must be finite and > 0")
