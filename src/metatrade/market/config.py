"""Configuration shared by TradingEnv and BatchTradingEnv (one dataclass, typed, defaulted).

Both environments read the same config so that they implement the same MDP; the
equivalence test relies on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from metatrade.data.task_arrays import TaskArrays
from metatrade.market.costs import CostModel, InstrumentSpec, cost_model, instrument_spec
from metatrade.market.sizing import FixedFractionSizer, PositionSizer

ACCOUNT_DIM = 4  # position, unrealised P&L / capital, equity / capital - 1, bars held / scale
ACCOUNT_NAMES = ("position", "unrealised_pnl_frac", "equity_return", "bars_held_scaled")
OBSERVATIONS = ("full", "position")
"""``TradingEnvConfig.observation``: the 4 account entries, or the position only."""
ACTION_SPACES = ("orders", "target")
"""``TradingEnvConfig.actions``: the five orders, or the next position (``market.rules``)."""


@dataclass(frozen=True)
class RewardShaping:
    """Optional shaping terms added to the P&L reward; a coefficient of 0 switches a term off.

    reward = pnl_reward
             - invalid_action_penalty * [the action was rejected]
             - losing_hold_penalty    * [a position is open and its unrealised P&L < 0]
             + winning_close_bonus    * [the agent's close realised a trade with net P&L > 0]
             - drawdown_penalty       * (1 - equity / running peak equity of the episode)
    """

    invalid_action_penalty: float = 0.0
    losing_hold_penalty: float = 0.0
    winning_close_bonus: float = 0.0
    drawdown_penalty: float = 0.0


@dataclass(frozen=True)
class TradingEnvConfig:
    """Everything that defines the trading MDP besides the bars themselves."""

    initial_capital: float = 1_000_000.0
    """starting cash, in each instrument's currency"""
    lookback: int = 32
    """bars of features in the observation window (L)"""
    episode_length: int | None = 256
    """steps per training episode (a random window); None = backtest the whole split"""
    split: str = "train"
    """rows episodes trade in: "train", "validation", "test" or "all" (TaskArrays.splits)"""
    square_off: bool = False
    """close any open position at the close of a session's last bar (session_end), for
    instruments whose description allows it (``square_off: session_end``, the default of
    exchange calendars; ``none`` for 24/5 and 24/7 markets): ``squares_off``"""
    ruin_fraction: float = 0.5
    """episode terminates when equity <= ruin_fraction * initial_capital"""
    bars_held_scale: float = 100.0
    """bars held is divided by this in the observation"""
    costs: CostModel | None = None
    """costs of every instrument; None = each task's own (``TaskArrays.market``: its
    instruments.yaml ``costs``), ``CostModel()`` (the origin's) for arrays without one"""
    spec: InstrumentSpec | None = None
    """lot size of every instrument; None = each task's own (its ``lot_size``), else 1"""
    instruments: dict[str, tuple[CostModel, InstrumentSpec]] = field(default_factory=dict)
    """instrument name -> (CostModel, InstrumentSpec) overriding all of the above"""
    sizer: PositionSizer = field(default_factory=FixedFractionSizer)
    """entry size (needs ``units`` and ``units_array``); default: all equity, whole lots"""
    reward: RewardShaping = field(default_factory=RewardShaping)
    """shaping terms, all off by default"""
    observation: str = "full"
    """account part of the observation: "full" (the 4 ACCOUNT_NAMES) or "position" (the
    position -1/0/+1 only: no path dependence, so ``metatrade.exact`` can compute the
    expected P&L of the same policy by a recursion over positions)"""
    actions: str = "orders"
    """action space (``metatrade.market.rules``): "orders" (Discrete(5): BUY_LONG, SELL_SHORT,
    CLOSE_LONG, CLOSE_SHORT, HOLD; a reversal takes two bars) or "target" (Discrete(3): the
    next position short, flat, long; a reversal in one bar, both legs costed)"""
    features: tuple[str, ...] | None = None
    """feature columns the observation window holds, by name (``TaskArrays.select_features``);
    None = the task arrays' columns as given (a DataLoader's: ``FEATURE_NAMES``)"""
    liquidate_at_end: bool = False
    """close a position still open when an episode ends (ruin or its last bar) at that bar's
    close, paying the exit (``BacktestingEngine.liquidate``), and report the equity then in
    ``info["final_equity"]``: what every evaluation ledger does, so every cost is counted"""

    def __post_init__(self) -> None:
        if self.lookback < 1:
            raise ValueError(f"TradingEnvConfig.lookback={self.lookback}: use >= 1 bars")
        if self.episode_length is not None and self.episode_length < 1:
            raise ValueError(
                f"TradingEnvConfig.episode_length={self.episode_length}: use >= 1 or None"
            )
        if not self.initial_capital > 0:
            raise ValueError(f"TradingEnvConfig.initial_capital={self.initial_capital}: use > 0")
        if self.observation not in OBSERVATIONS:
            raise ValueError(
                f"TradingEnvConfig.observation={self.observation!r}: use one of {OBSERVATIONS}"
            )
        if self.actions not in ACTION_SPACES:
            raise ValueError(
                f"TradingEnvConfig.actions={self.actions!r}: use one of {ACTION_SPACES}"
            )
        if self.features is not None:
            names = tuple(self.features)
            if not names or len(set(names)) != len(names):
                raise ValueError(
                    f"TradingEnvConfig.features={names!r}: name each feature once, at least one"
                )
            object.__setattr__(self, "features", names)

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
