"""Deterministic whole-split backtests of one task, at default and at stressed costs.

A backtest answers "what would this policy have done on these bars": it walks a
``TradingEnv`` in backtest mode (``episode_length=None``: from the split's first usable bar
to its last) taking the *mode* of the policy at every bar (no sampling noise; or, with a
``sample_seed``, actions drawn from the policy: ``evaluation.actions: sample``), and reads
the ledger's equity curve and closed trades. Any position still open after the last bar is
closed at that bar's close, paying the exit cost (``TradingEnvConfig.liquidate_at_end``), so
that every cost is counted and every trade appears in the trade list.

What can be backtested (``Backtestable``):

* a ``BaseAgent`` (``select_action(obs, deterministic=True)``);
* a torch policy with its parameters: ``(policy, params)`` (``functional_call``, mode);
* a ``PositionRule``: a target position per bar (buy-and-hold, flat, the synthetic oracle),
  turned into the env's actions under its rules (``env.actions``: with orders, to reverse,
  close, then open on the next bar; with target positions, traded directly).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor
from torch.func import functional_call

from metatrade.agents.base import BaseAgent
from metatrade.agents.networks.base import Policy
from metatrade.data.instruments import Market
from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.metrics import breakeven_bps, compute_metrics, traded_notional
from metatrade.market.config import TradingEnvConfig
from metatrade.market.costs import CostModel
from metatrade.market.env import TradingEnv
from metatrade.market.rules import action_rules

Params = dict[str, Tensor]
STRESS_BPS = 2.0  # extra proportional cost per order side in the stressed run
DEFAULT_LABEL = "default costs"
STRESSED_LABEL = "stressed (+2 bps/side)"


@dataclass(frozen=True)
class PositionRule:
    """A fixed policy given as target positions per bar: ``positions(arrays) -> int8 [N]``
    in {-1, 0, +1} (short, flat, long), where entry t is the position wanted after the
    order decided on bar t (filled at ``open[t+1]``)."""

    name: str
    positions: Callable[[TaskArrays], np.ndarray]


def buy_and_hold() -> PositionRule:
    """Long from the first bar to the last: the benchmark a user gets for free."""
    return PositionRule("buy-and-hold", lambda a: np.ones(len(a), dtype=np.int8))


def flat() -> PositionRule:
    """Never trade: zero P&L, zero costs."""
    return PositionRule("flat", lambda a: np.zeros(len(a), dtype=np.int8))


def fixed_positions(name: str, positions: np.ndarray) -> PositionRule:
    """A rule from a precomputed position array [N] aligned with the task's rows
    (e.g. ``metatrade.data.synthetic.oracle_positions(arrays.close, params)``)."""
    pos = np.asarray(positions).astype(np.int8)

    def _get(arrays: TaskArrays) -> np.ndarray:
        if len(pos) != len(arrays):
            raise ValueError(
                f"rule {name!r}: {len(pos)} positions for task {arrays.task} with "
                f"{len(arrays)} rows; compute them from this task's arrays"
            )
        return pos

    return PositionRule(name, _get)


Backtestable = BaseAgent | tuple[Policy, Params] | PositionRule


def target_to_action(
    target: npt.ArrayLike, position: npt.ArrayLike, actions: str = "orders"
) -> np.ndarray:
    """Actions of the action space ``actions`` that move ``position`` toward ``target``
    (arrays of {-1, 0, 1}): ``metatrade.market.rules.ActionRules.toward``.

    Orders, one a bar: equal -> HOLD; flat -> BUY_LONG / SELL_SHORT; long (short) with
    another target -> CLOSE_LONG (CLOSE_SHORT); a reversal completes on the next bar.
    Target positions: the target itself (``target + 1``), a reversal in one bar.
    """
    table = action_rules(actions).toward
    target = np.asarray(target).astype(np.int64)
    return table[target + 1, np.asarray(position).astype(np.int64) + 1]


@dataclass
class BacktestResult:
    """One backtest: equity [n] at each bar close from the start bar (timestamps int64 ns,
    UTC), ``positions`` [n] (entry i > 0: the position held over the return into bar i,
    entry 0: flat at the start), the closed trades and the metrics."""

    name: str
    task: str
    split: str
    cost_label: str
    costs: CostModel
    initial_capital: float
    bar_minutes: int
    timestamps: np.ndarray
    equity: np.ndarray
    positions: np.ndarray
    trades: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)
    market: Market | None = None  # the task's clock and currency (report labels)

    @property
    def breakeven_bps(self) -> float:
        """Mean proportional cost per order side (bps) at which the net P&L would be zero,
        trades held fixed: the costs now (``CostModel.per_side_bps``) plus the margin."""
        notional = traded_notional(self.trades.to_dict("records"))
        return breakeven_bps(self.total_pnl, notional, self.costs.per_side_bps)

    @property
    def total_pnl(self) -> float:
        return float(self.equity[-1] - self.initial_capital)

    @property
    def total_return(self) -> float:
        return self.total_pnl / self.initial_capital


def _decider(
    policy: Backtestable, arrays: TaskArrays, sample_seed: int | None = None
) -> Callable[[np.ndarray, TradingEnv], int]:
    """A function (obs, env) -> action for any Backtestable: the mode, or (``sample_seed``)
    an action drawn from the policy with a generator of that seed."""
    if isinstance(policy, PositionRule):
        targets = policy.positions(arrays)

        def rule(obs: np.ndarray, env: TradingEnv) -> int:
            pos = np.int8(env.engine.position)
            return int(target_to_action(targets[env.bar], pos, env.config.actions))

        return rule
    if isinstance(policy, BaseAgent):
        mode = sample_seed is None
        return lambda obs, env: int(policy.select_action(obs, deterministic=mode))
    if isinstance(policy, tuple) and len(policy) == 2:
        module, params = policy
        dtype = next(iter(params.values())).dtype
        gen = None if sample_seed is None else torch.Generator().manual_seed(sample_seed)

        def torch_policy(obs: np.ndarray, env: TradingEnv) -> int:
            with torch.no_grad():
                out = functional_call(module, params, (torch.as_tensor(obs, dtype=dtype),))
                if gen is None:
                    return int(module.distribution.mode(out))
                return int(module.distribution.sample(out, generator=gen))

        return torch_policy
    raise TypeError(
        f"cannot backtest {type(policy).__name__}: pass a BaseAgent, a (policy, params) tuple "
        "or a PositionRule (buy_and_hold(), flat(), fixed_positions(...))"
    )


def policy_name(policy: Backtestable) -> str:
    if isinstance(policy, PositionRule):
        return policy.name
    if isinstance(policy, BaseAgent):
        return type(policy).__name__
    return type(policy[0]).__name__ if isinstance(policy, tuple) else type(policy).__name__


def stressed_config(
    config: TradingEnvConfig,
    extra_bps: float = STRESS_BPS,
    *,
    tasks: Sequence[TaskArrays] = (),
) -> TradingEnvConfig:
    """``config`` with ``extra_bps`` more proportional cost on every order side (entry and
    exit): on its ``costs`` when set, on every per-instrument override, and on the costs of
    each of ``tasks`` (their own market's, when ``costs`` is None)."""

    def bump(c: CostModel) -> CostModel:
        name = f"{c.label} +{extra_bps:g} bps/side"
        return replace(c, proportional_bps=c.proportional_bps + extra_bps, name=name)

    instruments = {k: (bump(c), s) for k, (c, s) in config.instruments.items()}
    for arrays in tasks:
        if arrays.task.instrument not in instruments:
            costs, spec = config.market_for(arrays)
            instruments[arrays.task.instrument] = (bump(costs), spec)
    shared = None if config.costs is None else bump(config.costs)
    return replace(config, costs=shared, instruments=instruments)


_TRADE_COLUMNS = (
    "side",
    "quantity",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "entry_cost",
    "exit_cost",
    "gross_pnl",
    "net_pnl",
    "bars_held",
)


def _drive(env: TradingEnv, decide: Callable[[np.ndarray, TradingEnv], int]) -> list[int]:
    """Run one episode from reset to its end; the position after reset and after each step."""
    obs, _ = env.reset()
    positions = [env.engine.position]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(decide(obs, env))
        positions.append(info["position"])
        done = terminated or truncated
    return positions


def run_backtest(
    policy: Backtestable,
    arrays: TaskArrays,
    *,
    split: str = "test",
    config: TradingEnvConfig | None = None,
    name: str | None = None,
    cost_label: str = DEFAULT_LABEL,
    sample_seed: int | None = None,
) -> BacktestResult:
    """Backtest ``policy`` over the whole ``split`` of one task: its mode, or with
    ``sample_seed`` actions drawn from it (one seeded path).

    ``config`` sets costs, lookback, capital, square-off, features, action space (its
    ``split`` and ``episode_length`` are replaced by ``split`` and None). Returns a BacktestResult whose
    metrics come from ``metatrade.evaluation.metrics.compute_metrics``.
    """
    cfg = (config or TradingEnvConfig()).with_overrides(
        split=split, episode_length=None, liquidate_at_end=True
    )
    env = TradingEnv(arrays, cfg)
    positions = _drive(env, _decider(policy, arrays, sample_seed))
    eng = env.engine  # its last mark holds the equity after the final exit
    equity = np.asarray(eng.equity_curve, dtype=np.float64)
    trades = pd.DataFrame([t.to_dict() for t in eng.trades], columns=list(_TRADE_COLUMNS))
    timestamps = np.asarray(eng.equity_times, dtype=np.int64)
    costs, _ = cfg.market_for(arrays)
    # positions[i + 1] is held over the bar return i -> i + 1 (the order filled at its open).
    metrics = compute_metrics(
        equity,
        eng.trades,
        periods_per_year=arrays.bars_per_year,
        positions=positions[1:],
        initial_capital=cfg.initial_capital,
    )
    return BacktestResult(
        name=name or policy_name(policy),
        task=str(arrays.task),
        split=split,
        cost_label=cost_label,
        costs=costs,
        initial_capital=float(cfg.initial_capital),
        bar_minutes=int(arrays.bar_minutes),
        timestamps=timestamps,
        equity=equity,
        positions=np.asarray(positions, dtype=np.int8),
        trades=trades,
        metrics=dict(metrics),
        market=arrays.market,
    )


def run_backtest_pair(
    policy: Backtestable,
    arrays: TaskArrays,
    *,
    split: str = "test",
    config: TradingEnvConfig | None = None,
    name: str | None = None,
    stress_bps: float = STRESS_BPS,
    sample_seed: int | None = None,
) -> dict[str, BacktestResult]:
    """The same backtest at default costs and with ``stress_bps`` more per order side (with
    ``sample_seed``: the same draws in both).

    Returns ``{"default costs": ..., "stressed (+2 bps/side)": ...}`` (in that order)."""
    cfg = config or TradingEnvConfig()
    stressed_label = f"stressed (+{stress_bps:g} bps/side)"
    return {
        DEFAULT_LABEL: run_backtest(
            policy,
            arrays,
            split=split,
            config=cfg,
            name=name,
            cost_label=DEFAULT_LABEL,
            sample_seed=sample_seed,
        ),
        stressed_label: run_backtest(
            policy,
            arrays,
            split=split,
            config=stressed_config(cfg, stress_bps, tasks=[arrays]),
            name=name,
            cost_label=stressed_label,
            sample_seed=sample_seed,
        ),
    }


def metrics_table(results: Mapping[str, BacktestResult]) -> dict[str, dict[str, Any]]:
    """{column label: metrics} for the report."""
    return {label: r.metrics for label, r in results.items()}
