"""BatchTradingEnv: the TradingEnv MDP for T tasks x E episodes in one numpy step.

Same rules, same float operations in the same order as ``TradingEnv`` + ``BacktestingEngine``
(the equivalence test checks bit-identical trajectories). Tasks may differ in instrument,
timeframe, length and costs; they must share the feature width F. All bars of all tasks
are concatenated once; a slot's state is an index into them, and its observation window
is gathered from an overlapping (no-copy) view of the feature matrix (no per-step rebuilding).

Autoreset is same-step: when a slot's episode ends, the returned obs is the first
observation of its next episode and ``info["final_obs"]`` holds the last one; every other
``info`` array describes the transition just taken (before any reset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metatrade.data.task_arrays import TaskArrays
from metatrade.market import rules
from metatrade.market.bars import concatenate_bars, feature_width
from metatrade.market.config import TradingEnvConfig, episode_bounds
from metatrade.market.costs import lots_by_row
from metatrade.market.shaping import shaped_rewards


class BatchTradingEnv:
    """T tasks x E episodes of :class:`~metatrade.market.env.TradingEnv`, vectorised.

    Shapes: ``reset() -> obs [T, E, L*F + A]`` (A = ``config.account_dim``: 4, or 1 with
    ``observation="position"``); ``step(actions [T, E] int) -> (obs,
    reward [T, E] float32, terminated [T, E] bool, truncated [T, E] bool, info)`` with
    info arrays [T, E]: ``pnl_reward``, ``equity``, ``cash``, ``position``, ``bar``,
    ``invalid_action``, ``order_cost``, ``squared_off``, ``trade_closed`` and, meaningful
    where ``trade_closed``, ``trade_pnl``, ``trade_side``, ``trade_quantity``,
    ``trade_entry_price``, ``trade_exit_price``, ``trade_costs``; plus ``final_obs``.
    ``bar`` and ``starts`` are row indices into each task's own arrays.

    Args:
        task_arrays_list: one TaskArrays per task row (same feature width F).
        episodes_per_task: E, parallel episodes per task.
        config: the shared :class:`~metatrade.market.config.TradingEnvConfig`.
        seed: seeds the generator of episode starts (``reset(seed=...)`` reseeds).
        **overrides: TradingEnvConfig fields.
    """

    def __init__(
        self,
        task_arrays_list: Sequence[TaskArrays],
        episodes_per_task: int,
        config: TradingEnvConfig | None = None,
        seed: int | None = None,
        **overrides: Any,
    ) -> None:
        cfg = (config or TradingEnvConfig()).with_overrides(**overrides)
        task_arrays_list = [ta.select_features(cfg.features) for ta in task_arrays_list]
        n_feat = feature_width(task_arrays_list, episodes_per_task)
        self.config = cfg
        self.task_arrays = list(task_arrays_list)
        self.num_tasks = len(self.task_arrays)
        self.episodes_per_task = int(episodes_per_task)
        self.tasks = [ta.task for ta in self.task_arrays]
        self._shape = (self.num_tasks, self.episodes_per_task)
        n_slots = self.num_tasks * self.episodes_per_task
        lookback = cfg.lookback
        self._window_size = lookback * n_feat
        self.account_dim = cfg.account_dim
        self._full_account = cfg.observation == "full"
        bars = concatenate_bars(self.task_arrays, lookback=lookback, account_dim=cfg.account_dim)
        offsets = bars.offsets
        self._open, self._close = bars.open, bars.close
        allowed = [np.full(len(ta), cfg.squares_off(ta)) for ta in self.task_arrays]
        self._session_end = bars.session_end & np.concatenate(allowed)  # square-off rows
        self._windows = bars.windows
        self._flat_features = bars.flat  # keeps the windows' buffer alive
        slot = np.repeat(np.arange(self.num_tasks), self.episodes_per_task)
        self._slot_bounds(offsets, slot)
        self._slot_markets(slot)
        self.window_shape = (lookback, n_feat)
        # typed as BatchEnv declares them (settable protocol members must match exactly)
        self.observation_space: gym.spaces.Box = gym.spaces.Box(
            -np.inf, np.inf, (self._window_size + self.account_dim,), np.float32
        )
        self.rules = rules.action_rules(cfg.actions)
        self._table = self.rules.flat  # one gather per step instead of a dozen ops
        self.action_space: gym.spaces.Space = gym.spaces.Discrete(self.rules.num_actions)
        self._rng = np.random.default_rng(seed)
        self._init_slots(n_slots)

    def _init_slots(self, n_slots: int) -> None:
        """Per-slot episode and account state (no episode yet: ``_t`` is -1 until reset)."""
        z = np.zeros(n_slots)
        self._t = np.full(n_slots, -1, dtype=np.int64)
        self._start, self._end = self._t.copy(), self._t.copy()
        self._pos = np.zeros(n_slots, dtype=np.int64)  # -1 short, 0 flat, +1 long
        self._qty, self._entry, self._entry_cost = z.copy(), z.copy(), z.copy()
        self._held = np.zeros(n_slots, dtype=np.int64)
        self._cash, self._equity, self._peak = (z + self._capital for _ in range(3))

    def _slot_bounds(self, offsets: np.ndarray, slot: np.ndarray) -> None:
        """Per slot: its task's offset and first / last start bar and stop (global rows)."""
        cfg = self.config
        bounds = np.array([episode_bounds(ta, cfg) for ta in self.task_arrays])  # first,last,stop
        self._offset = offsets[slot]
        self._first = (bounds[:, 0] + offsets)[slot]
        self._last = (bounds[:, 1] + offsets)[slot]
        self._stop = (bounds[:, 2] + offsets)[slot]
        if cfg.episode_length is None:
            self.max_episode_steps = int((bounds[:, 2] - 1 - bounds[:, 0]).max())
        else:
            self.max_episode_steps = int(cfg.episode_length)

    def _slot_markets(self, slot: np.ndarray) -> None:
        """Per slot: its instrument's costs and lot size; the account constants."""
        cfg = self.config
        markets = [cfg.market_for(ta) for ta in self.task_arrays]
        self._entry_fee = np.array([float(c.entry_fee) for c, _ in markets])[slot]
        self._exit_fee = np.array([float(c.exit_fee) for c, _ in markets])[slot]
        self._prop = np.array([c.proportional_rate for c, _ in markets])[slot]
        self._slip = np.array([c.slippage_rate for c, _ in markets])[slot]
        self._side_costs = any(c.side_dependent for c, _ in markets)
        self._buy = np.array([c.buy_rate for c, _ in markets])[slot]
        self._sell = np.array([c.sell_rate for c, _ in markets])[slot]
        self._lot = np.array([float(s.lot_size) for _, s in markets])[slot]
        self._lot_rows = lots_by_row(self.task_arrays, [s for _, s in markets])  # dated lots
        self._capital = float(cfg.initial_capital)
        self._ruin_equity = cfg.ruin_fraction * self._capital
        self._held_scale = float(cfg.bars_held_scale)

    def reset(self, seed: int | None = None, starts: np.ndarray | None = None) -> np.ndarray:
        """Start every slot afresh; ``starts`` [T, E] (task rows) fixes the start bars."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        every = np.ones(self._t.shape, dtype=bool)
        if starts is None:
            self._restart(every, None)
        else:
            local = np.broadcast_to(np.asarray(starts, dtype=np.int64), self._shape).ravel()
            glob = local + self._offset
            bad = (glob < self._first) | (glob > self._last)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"starts[{np.unravel_index(i, self._shape)}]={local[i]} outside "
                    f"[{self._first[i] - self._offset[i]}, {self._last[i] - self._offset[i]}] "
                    f"for task {self.tasks[i // self.episodes_per_task]}"
                )
            self._restart(every, glob)
        return self._observe(np.arange(self._t.size)).reshape(*self._shape, -1)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = self._check_actions(actions)
        t = self._t + 1
        o = self._open[t]
        # Validity by table lookup on (action, position): one gather instead of a dozen ops.
        tab = self._table
        code = tab.code_base[a] + self._pos
        closed = tab.want_close[code]
        invalid = tab.invalid[code]

        # Agent closes (engine._close) at the next open, then entries (a reversal: both).
        trade = self._close_positions(closed, o)
        order_cost = trade.pop("cost") * closed
        agent_win = closed & (trade["trade_pnl"] > 0.0)
        entry_cost, unfilled = self._enter(tab.entry_side[code], tab.want_open[code], o, t)
        order_cost += entry_cost
        invalid |= unfilled
        squared = self._square_off(t, trade, order_cost)
        closed = closed | squared if self.config.square_off else closed

        # Mark to the close (engine.mark).
        c = self._close[t]
        self._t = t
        self._held += self._pos != 0
        mtm = rules.position_pnl(
            side=self._pos, quantity=self._qty, price=c, entry_price=self._entry
        )
        equity = self._cash + mtm
        unreal = mtm - self._entry_cost
        pnl_reward = (equity - self._equity) / self._capital
        reward = shaped_rewards(
            self.config.shaping,
            pnl_reward,
            position=self._pos,
            unreal=unreal,
            invalid=invalid,
            agent_win=agent_win,
            equity=equity,
            peak=self._peak,
        )
        self._equity = equity

        terminated = equity <= self._ruin_equity
        truncated = ~terminated & (t >= self._end)
        obs = self._observe(None, unreal)
        info: dict[str, Any] = {
            "pnl_reward": pnl_reward.astype(np.float32),
            "equity": equity,
            "cash": self._cash.copy(),
            "position": self._pos.astype(np.int8),
            "bar": t - self._offset,
            "invalid_action": invalid,
            "order_cost": order_cost,
            "squared_off": squared,
            "trade_closed": closed,
            **{k: v for k, v in trade.items() if k != "cost"},
        }
        return self._autoreset(obs, reward, terminated, truncated, info)

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        """The actions as a flat integer array [T * E], or a clear error."""
        if self._t[0] < 0:
            raise RuntimeError("BatchTradingEnv.step called before reset()")
        a = np.asarray(actions).reshape(-1)
        if a.shape != self._t.shape:
            raise ValueError(f"actions shape {np.shape(actions)}: expected {self._shape}")
        n = self.rules.num_actions
        if a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= n:
            raise ValueError(f"actions must be integers in [0, {n}); got {a.dtype} {a}")
        return a

    def _enter(
        self, side: np.ndarray, want_open: np.ndarray, o: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Entries (engine._open) on ``side`` where ``want_open`` (every such slot is flat by
        now): fill at the next open ``o`` of bars ``t``, size on cash (= equity when flat).
        Returns each slot's entry cost and where an entry was refused (too small)."""
        fill_in = rules.entry_fill(o, side, self._slip)
        rate = self._prop  # plus the side's own rate: order_cost(prop, side_rate)'s bits
        if self._side_costs:
            rate = rate + rules.order_side_rate(side, buy_rate=self._buy, sell_rate=self._sell)
        lot = self._lot if self._lot_rows is None else self._lot_rows[t]
        units = self.config.sizer.units_array(self._cash, fill_in, self._entry_fee, rate, lot)
        opened = want_open & (units >= lot)
        fee = self._entry_fee
        cost_in = rules.order_cost(fee=fee, fill=fill_in, quantity=units, proportional_rate=rate)
        # A flat slot's position fields are exactly 0, so "+= x * opened" sets them to x
        # where an entry fills and leaves every other slot unchanged (x is always finite);
        # cheaper than masked copies. bars held is already 0 when flat.
        order_cost = cost_in * opened
        self._cash -= order_cost
        self._pos += side * opened
        self._qty += units * opened
        self._entry += fill_in * opened
        self._entry_cost += order_cost
        return order_cost, want_open & ~opened

    def _square_off(
        self, t: np.ndarray, trade: dict[str, np.ndarray], order_cost: np.ndarray
    ) -> np.ndarray:
        """Optional square-off at the close of a session's last bar; adds its cost to
        ``order_cost`` and its trades to ``trade`` in place. Returns where it closed."""
        if not self.config.square_off:
            return np.zeros(t.shape, dtype=bool)
        squared = (self._pos != 0) & self._session_end[t]
        if squared.any():
            so = self._close_positions(squared, self._close[t])
            order_cost += so.pop("cost") * squared
            for key, value in so.items():
                np.copyto(trade[key], value, where=squared)
        return squared

    def _autoreset(
        self,
        obs: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        info: dict[str, Any],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Same-step autoreset of the slots whose episode ended (their last observation in
        ``info["final_obs"]``), then everything reshaped to [T, E, ...]."""
        done = terminated | truncated
        final_obs = obs
        if self.config.liquidate_at_end:
            info["final_equity"] = np.where(done, self._liquidate(done), np.nan)
        if done.any():
            final_obs = obs.copy()
            idx = np.flatnonzero(done)
            self._restart(done, None)
            obs[idx] = self._observe(idx)
        info["final_obs"] = final_obs.reshape(*self._shape, -1)
        info = {k: (v.reshape(self._shape) if k != "final_obs" else v) for k, v in info.items()}
        return (
            obs.reshape(*self._shape, -1),
            reward.astype(np.float32).reshape(self._shape),
            terminated.reshape(self._shape),
            truncated.reshape(self._shape),
            info,
        )

    @property
    def starts(self) -> np.ndarray:
        """Start bar (task row) of each slot's current episode, [T, E]."""
        return (self._start - self._offset).reshape(self._shape)

    @property
    def bars(self) -> np.ndarray:
        """Bar (task row) each slot currently observes, [T, E]."""
        return (self._t - self._offset).reshape(self._shape)

    def liquidate(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Close the open positions of the slots under ``mask`` [T, E] (None: every slot) at
        the current bar's close, paying the exit (``BacktestingEngine.liquidate``, vectorised);
        the equity of every slot then, [T, E]."""
        every = np.ones(self._t.shape, dtype=bool)
        mask = every if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
        return self._liquidate(mask).reshape(self._shape)

    def _liquidate(self, mask: np.ndarray) -> np.ndarray:
        """``liquidate`` on flat slot arrays; a new equity array (``info`` may hold the old)."""
        still_open = mask & (self._pos != 0)
        if still_open.any():
            self._close_positions(still_open, self._close[self._t])
        self._equity = np.where(mask, self._cash, self._equity)  # flat: cash is the equity
        return self._equity

    def _close_positions(self, mask: np.ndarray, price: np.ndarray) -> dict[str, np.ndarray]:
        """Close the positions under ``mask`` at quoted ``price`` (engine._close, vectorised).

        Returns this close's ``cost`` (every slot) and the ``trade_*`` info arrays (zero
        outside ``mask``).
        """
        pos, qty = self._pos, self._qty
        side_rate = 0.0
        if self._side_costs:  # closing a long sells, closing a short buys
            side_rate = rules.order_side_rate(-pos, buy_rate=self._buy, sell_rate=self._sell)
        fill, gross, cost, net = rules.close_position(
            price,
            side=pos,
            quantity=qty,
            entry_price=self._entry,
            entry_cost=self._entry_cost,
            exit_fee=self._exit_fee,
            proportional_rate=self._prop,
            slippage_rate=self._slip,
            side_rate=side_rate,
        )
        trade = {
            "cost": cost,
            "trade_pnl": np.where(mask, net, 0.0),  # (net * mask would give -0.0)
            "trade_side": (pos * mask).astype(np.int8),
            "trade_quantity": qty * mask,
            "trade_entry_price": self._entry * mask,
            "trade_exit_price": fill * mask,
            "trade_costs": (self._entry_cost + cost) * mask,
        }
        cash = self._cash + gross
        cash -= cost  # (cash + gross) - cost, the engine's order of operations
        np.copyto(self._cash, cash, where=mask)
        keep = ~mask
        for arr in (self._pos, self._qty, self._entry, self._entry_cost, self._held):
            arr *= keep  # zero where closed (all these fields are >= 0 or int: no -0.0)
        return trade

    def _restart(self, mask: np.ndarray, glob_starts: np.ndarray | None) -> None:
        """New episodes in the slots under ``mask`` (flat), flat account at C0."""
        idx = np.flatnonzero(mask)
        if glob_starts is not None:
            starts = glob_starts[idx]
        elif self.config.episode_length is None:
            starts = self._first[idx]
        else:
            starts = self._rng.integers(self._first[idx], self._last[idx] + 1)
        self._start[idx] = starts
        self._t[idx] = starts
        if self.config.episode_length is None:
            self._end[idx] = self._stop[idx] - 1
        else:
            self._end[idx] = starts + self.config.episode_length
        for arr in (self._pos, self._qty, self._entry, self._entry_cost):
            arr[idx] = 0
        self._held[idx] = 0
        self._equity = self._equity.copy()  # the step's info["equity"] may alias it
        for arr in (self._cash, self._equity, self._peak):
            arr[idx] = self._capital

    def _observe(self, idx: np.ndarray | None, unreal: np.ndarray | None = None) -> np.ndarray:
        """Flat float32 observations of slots ``idx`` (None = all, with ``unreal`` given)."""
        sel = slice(None) if idx is None else idx
        t = self._t[sel]
        n = self._window_size
        rows = t - (self.window_shape[0] - 1)
        obs = self._windows[rows].view(np.float32).reshape(t.size, n + self.account_dim)
        pos, cap = self._pos[sel], self._capital
        obs[:, n] = pos
        if not self._full_account:
            return obs
        if unreal is None:
            c = self._close[t]
            unreal = pos * self._qty[sel] * (c - self._entry[sel]) - self._entry_cost[sel]
        obs[:, n + 1] = unreal / cap
        obs[:, n + 2] = self._equity[sel] / cap - 1.0
        obs[:, n + 3] = self._held[sel] / self._held_scale
        return obs
