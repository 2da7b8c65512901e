"""TradingEnv: one episode of one task, a Gymnasium environment over a BacktestingEngine."""

from __future__ import annotations

import struct
from typing import Any

import gymnasium as gym
import numpy as np

from metatrade.data.task_arrays import TaskArrays
from metatrade.market.actions import Action
from metatrade.market.config import (
    TradingEnvConfig,
    episode_bounds,
    episode_end,
    validate_arrays,
)
from metatrade.market.engine import BacktestingEngine
from metatrade.market.rules import Order, action_rules

_CLOSE_LONG = int(Action.CLOSE_LONG)
_CLOSE_SHORT = int(Action.CLOSE_SHORT)
_HOLD_ORDER = int(Order.HOLD)
_INVALID_ORDER = int(Order.INVALID)
_F32 = struct.Struct("<f")
DEFAULT_TASK = ("Nifty", "15")
"""The embedded task ``TradingEnv()`` (and ``gymnasium.make("metatrade/Trading-v0")``) trades"""


def _to_f32(x: float) -> float:
    """Round to float32 like ``float(np.float32(x))`` (IEEE round-to-nearest), but faster."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return float(np.float32(x))


class TradingEnv(gym.Env):
    """Trade one instrument at one timeframe, one position at a time, with Indian brokerage.

    ## Description
    Each step the agent sees a window of causal features (computed by the data layer) and
    its account, and chooses an order. An order decided on bar ``t`` fills at
    ``open[t + 1]`` (the agent never trades at a price it has already seen); the account is
    then marked to ``close[t + 1]`` and the episode moves to bar ``t + 1``. The ledger is a
    :class:`~metatrade.market.engine.BacktestingEngine` (see its accounting convention).

    ## Action Space
    ``config.actions`` picks one of two (the tables are :mod:`metatrade.market.rules`):

    * ``"orders"`` (default): ``Discrete(5)``: 0 BUY_LONG, 1 SELL_SHORT, 2 CLOSE_LONG,
      3 CLOSE_SHORT, 4 HOLD. Invalid orders (close with nothing or the other side open,
      open while any position is open) are not executed: the step acts as HOLD,
      ``info["invalid_action"]`` is True and the optional invalid-action penalty applies.
      To reverse, close, then open on the next step.
    * ``"target"``: ``Discrete(3)``: the position wanted after the order, 0 short, 1 flat,
      2 long. Every action is valid; a reversal happens in one bar as two orders at
      ``open[t + 1]``: the close of the old position, then the open of the new one, each
      paying its own fee, proportional cost and slippage.

    Entries are sized by ``config.sizer`` (default: all equity, whole lots); an entry that
    cannot afford one lot is rejected like an invalid order (after a reversal's close the
    position is then flat).

    ## Observation Space
    ``Box(-inf, inf, (L*F + A,), float32)``: the feature rows of bars ``t-L+1 .. t``
    (oldest first, row-major ``[L, F]``; ``window_shape == (L, F)``) followed by the
    ``account_dim == A`` account values: A = 4 with ``observation="full"`` (default), A = 1
    (the position only) with ``observation="position"``:

    | index      | name                 | meaning                                   |
    | ---------- | -------------------- | ----------------------------------------- |
    | 0..L*F-1   | window               | ``features[t-L+1 : t+1].ravel()``         |
    | L*F        | position             | -1 short, 0 flat, +1 long                 |
    | L*F + 1    | unrealised_pnl_frac  | unrealised P&L (net of entry cost) / C0   |
    | L*F + 2    | equity_return        | equity / C0 - 1                           |
    | L*F + 3    | bars_held_scaled     | bars held / ``bars_held_scale``           |

    ## Rewards
    With C0 the initial capital and equity marked at each bar's close,
    ``pnl_reward = (equity[t+1] - equity[t]) / C0``, where equity already includes every
    cost paid on the step: entry ``entry_fee + bps * notional``, exit
    ``exit_fee + bps * notional`` (defaults 25 and 35 INR) and slippage in the fill price.
    ``reward = pnl_reward`` plus the optional shaping of
    :class:`~metatrade.market.config.RewardShaping` (all off by default).
    ``info["pnl_reward"]`` is always the pure P&L term. Rewards are float32.

    ## Starting State
    Flat, equity C0, at a bar drawn uniformly from the starts that fit ``episode_length``
    steps inside ``config.split`` (lookback rows may precede the split), or at
    ``options["start"]`` when given. Backtest mode (``episode_length=None``) starts at the
    split's first usable bar and runs to its last.

    ## Episode End
    Terminated: ruin, equity <= ``ruin_fraction * C0``. Truncated: the window's last bar
    was reached (an open position stays open and marked; ``square_off=True`` closes
    positions at the close of each session's last bar, ``session_end``, paying the exit fee).
    With ``liquidate_at_end`` (every evaluation ledger) a position still open when the
    episode ends is closed at that bar's close, paying the exit (``liquidate``), and
    ``info["final_equity"]`` holds the equity then.

    ## Arguments
    ``TradingEnv(task_arrays=None, config=None, render_mode=None, **overrides)`` where
    ``overrides`` are :class:`~metatrade.market.config.TradingEnvConfig` fields, e.g.
    ``gymnasium.make("metatrade/Trading-v0", task_arrays=ta, lookback=16, split="test")``.
    ``task_arrays=None`` trades ``DEFAULT_TASK``, the embedded NIFTY 50 15-minute bars
    (``DataLoader().get_task_arrays("Nifty", "15")``), so ``gymnasium.make(
    "metatrade/Trading-v0")`` works with no arguments.

    ## Version History
    * v0: initial version (``actions`` and ``features`` options added later; defaults
      unchanged).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task_arrays: TaskArrays | None = None,
        config: TradingEnvConfig | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if task_arrays is None:
            from metatrade.data.loader import DataLoader

            task_arrays = DataLoader().get_task_arrays(*DEFAULT_TASK)
        self.config = (config or TradingEnvConfig()).with_overrides(**overrides)
        task_arrays = task_arrays.select_features(self.config.features)
        validate_arrays(task_arrays)
        self.task_arrays = task_arrays
        self.render_mode = render_mode
        cfg = self.config
        self._first, self._last, self._stop = episode_bounds(task_arrays, cfg)
        self.max_episode_steps = (
            cfg.episode_length if cfg.episode_length is not None else self._stop - 1 - self._first
        )
        costs, spec = cfg.market_for(task_arrays)
        self._square_off = cfg.squares_off(task_arrays)
        self.engine = BacktestingEngine(cfg.initial_capital, costs, spec, cfg.sizer)

        n_feat = task_arrays.num_features
        self.window_shape = (cfg.lookback, n_feat)
        self.account_dim = cfg.account_dim
        self._full_account = cfg.observation == "full"
        self._window_size = cfg.lookback * n_feat
        self._width = n_feat
        self._held_scale = float(cfg.bars_held_scale)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (self._window_size + self.account_dim,), np.float32
        )
        self.rules = action_rules(cfg.actions)
        self._order_rows, self._legs = self.rules.rows, self.rules.legs
        self._num_actions = self.rules.num_actions
        self.action_space = gym.spaces.Discrete(self._num_actions)

        # Plain Python lists and a flat float32 array: scalar indexing stays cheap in step().
        self._flat = np.ascontiguousarray(task_arrays.features, dtype=np.float32).ravel()
        self._open = task_arrays.open.astype(np.float64).tolist()
        self._close = task_arrays.close.astype(np.float64).tolist()
        self._session_end = task_arrays.session_end.astype(bool).tolist()
        self._ts = task_arrays.timestamps.tolist()
        self._capital = float(cfg.initial_capital)
        self._ruin_equity = cfg.ruin_fraction * self._capital
        self._shaping = sh = cfg.shaping
        self._any_shaping = bool(
            sh.invalid_action_penalty
            or sh.losing_hold_penalty
            or sh.winning_close_bonus
            or sh.drawdown_penalty
        )
        self._liquidate_at_end = cfg.liquidate_at_end
        self._t = self._start = self._end = -1

    # ---------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = None if options is None else options.get("start")
        if start is None:
            if self.config.episode_length is None:
                start = self._first
            else:
                start = int(self.np_random.integers(self._first, self._last + 1))
        elif not self._first <= int(start) <= self._last:
            raise ValueError(
                f"task {self.task_arrays.task}: start {start} outside [{self._first}, {self._last}] "
                f"for split {self.config.split!r}, lookback {self.config.lookback}, "
                f"episode_length {self.config.episode_length}"
            )
        self._start = self._t = int(start)
        self._end = episode_end(self._start, self._stop, self.config)
        self.engine.reset()
        self._equity = self.engine.mark(self._close[self._t], self._ts[self._t])
        self._peak = self._equity
        return self._observation(), {"equity": self._equity, "position": 0, "bar": self._t}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._t < 0:
            raise RuntimeError("TradingEnv.step called before reset()")
        a = int(action)
        t = self._t + 1
        eng = self.engine
        ts = self._ts[t]
        if not 0 <= a < self._num_actions:
            raise ValueError(f"action {action!r}: use an integer in [0, {self._num_actions})")
        # The agent's order, inline: this is the hot path (a helper call here costs ~5%).
        invalid = False
        order_cost = 0.0
        agent_trade = trade = None
        order = self._order_rows[a][eng.position + 1]
        if order == _HOLD_ORDER:
            pass
        elif order == _INVALID_ORDER:
            invalid = True  # the engine's rules, without building a rejected TradeResult
        else:
            legs = self._legs[a][eng.position + 1]
            res = eng.execute_trade(legs[0], self._open[t], None, ts)
            if res.accepted:
                order_cost = res.cost
                agent_trade = trade = res.trade
                if len(legs) > 1:  # a reversal: the close filled, now the open
                    res = eng.execute_trade(legs[1], self._open[t], None, ts)
                    if res.accepted:
                        order_cost = order_cost + res.cost
                    else:
                        invalid = True
            else:
                invalid = True
        squared_off = False
        if self._square_off and eng.position != 0 and self._session_end[t]:
            order_cost, trade = self._square_off_at(t, ts, order_cost)
            squared_off = True
        equity = eng.mark(self._close[t], ts)
        self._t = t

        pnl_reward = (equity - self._equity) / self._capital
        if equity > self._peak:
            self._peak = equity
        reward = pnl_reward
        if self._any_shaping:
            reward = self._shaped_reward(pnl_reward, equity, invalid, agent_trade)
        self._equity = equity

        terminated = equity <= self._ruin_equity
        truncated = (not terminated) and t >= self._end
        obs = self._observation()
        info = self._step_info(pnl_reward, invalid, order_cost, squared_off, trade)
        if self._liquidate_at_end and (terminated or truncated):
            info["final_equity"] = self.liquidate()
        return obs, _to_f32(reward), terminated, truncated, info

    def _square_off_at(self, t: int, ts: Any, order_cost: float) -> tuple[float, Any]:
        """Close the open position at bar t's close (the session ends there); the order
        cost with the exit's added, and the closed trade."""
        eng = self.engine
        side = _CLOSE_LONG if eng.position > 0 else _CLOSE_SHORT
        res = eng.execute_trade(side, self._close[t], None, ts)
        return order_cost + res.cost, res.trade

    def _step_info(
        self, pnl_reward: float, invalid: bool, order_cost: float, squared_off: bool, trade: Any
    ) -> dict[str, Any]:
        """``step``'s info of the bar just marked (the trade's fields when one closed)."""
        eng = self.engine
        info = {
            "pnl_reward": _to_f32(pnl_reward),
            "equity": self._equity,
            "cash": eng.cash,
            "position": eng.position,
            "bar": self._t,
            "invalid_action": invalid,
            "order_cost": order_cost,
            "squared_off": squared_off,
            "trade_closed": trade is not None,
        }
        if trade is not None:
            info.update(_trade_info(trade))
        return info

    def liquidate(self) -> float:
        """Close any open position at the current bar's close, paying the exit
        (``BacktestingEngine.liquidate``: the one rule every ledger uses); the equity then."""
        self._equity = self.engine.liquidate()
        return self._equity

    def observe(self) -> np.ndarray:
        """The observation of the current bar with the current features and account."""
        return self._observation()

    def set_features(self, features: np.ndarray) -> None:
        """Swap the feature matrix for another of the same shape (the same rows, e.g. the
        walk-forward's per-fold normalisation); the account and the episode go on."""
        if features.shape != self.task_arrays.features.shape:
            raise ValueError(
                f"task {self.task_arrays.task}: new features {features.shape} != "
                f"{self.task_arrays.features.shape}"
            )
        self._flat = np.ascontiguousarray(features, dtype=np.float32).ravel()

    def _shaped_reward(
        self, pnl_reward: float, equity: float, invalid: bool, agent_trade: Any
    ) -> float:
        """The P&L reward plus ``config.shaping``'s shaping terms (the peak is up to date)."""
        eng = self.engine
        reward = pnl_reward
        sh = self._shaping
        if sh.invalid_action_penalty and invalid:
            reward = reward - sh.invalid_action_penalty
        if sh.losing_hold_penalty and eng.position != 0 and eng.unrealised_pnl < 0.0:
            reward = reward - sh.losing_hold_penalty
        if sh.winning_close_bonus and agent_trade is not None and agent_trade.net_pnl > 0.0:
            reward = reward + sh.winning_close_bonus
        if sh.drawdown_penalty:
            reward = reward - sh.drawdown_penalty * (1.0 - equity / self._peak)
        return reward

    # ---------------------------------------------------------------- helpers
    def _observation(self) -> np.ndarray:
        eng, cap, n = self.engine, self._capital, self._window_size
        stop = (self._t + 1) * self._width
        obs = np.empty(n + self.account_dim, dtype=np.float32)
        obs[:n] = self._flat[stop - n : stop]
        obs[n] = eng.position
        if not self._full_account:
            return obs
        obs[n + 1] = eng.unrealised_pnl / cap
        obs[n + 2] = self._equity / cap - 1.0
        obs[n + 3] = eng.bars_held / self._held_scale
        return obs

    @property
    def bar(self) -> int:
        """Index (row of the task arrays) of the bar the agent currently observes."""
        return self._t

    @property
    def start(self) -> int:
        """Start bar of the current episode."""
        return self._start


def _trade_info(trade: Any) -> dict[str, Any]:
    """The ``trade_*`` info entries of a closed round trip (an engine ``Trade``)."""
    return {
        "trade_pnl": trade.net_pnl,
        "trade_side": trade.side,
        "trade_quantity": trade.quantity,
        "trade_entry_price": trade.entry_price,
        "trade_exit_price": trade.exit_price,
        "trade_costs": trade.entry_cost + trade.exit_cost,
    }
