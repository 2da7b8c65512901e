"""`PnlWindows`: T tasks x W windows x N bars of historical bars, ready for the exact objective.

A window that starts on bar ``s`` is one env episode of ``episode_length = N`` started at
``s``: the policy decides on bars s .. s+N-1 (seeing the features of the L bars up to each),
every order fills at the next open, and the account is marked at the next close. A window
trades a fixed quantity Q_w (below); it holds, per decision bar t, as a fraction of the
initial capital C0 (a long position; a short earns the negative):

* ``gap[t]`` = Q_w (open[t+1] - close[t]) / C0, held by the position before the order;
* ``bar[t]`` = Q_w (close[t+1] - open[t+1]) / C0, held by the position after the order;
* ``notional[t]`` = Q_w open[t+1] / C0 (proportional costs and slippage of an order);
* ``square[t]`` / ``squared[t]``: Q_w close[t+1] / C0 and 1.0 where the position is closed
  at that close, else 0: at a session's last bar (``session_end[t+1]``) with ``square_off``,
  and always at the window's last bar, the final exit every evaluation ledger pays
  (``LiquidatingEnv``, ``run_backtest``, the walk-forward ledger), so the objective scores
  what is traded.

Quantity, the ONE approximation against the ledger: Q_w is what ``config.sizer`` buys with
the initial capital at the close of the window's first bar (whole lots); the ledger sizes
each entry from the equity and the fill price then. Exact when the sizer's quantity does
not depend on them (``metatrade.market.FixedUnitsSizer``; the exactness tests run so).
Measured on the embedded bars (docs/exact.md): 1.7% of the mean |P&L| of a 128-bar window
with the default all-equity sizer.

Shapes: every tensor has a leading [T] (task) axis, so ``torch.func.vmap`` maps a per-task
loss over ``windows.tensors()`` exactly as it does over ``metatrade.meta.Episodes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from metatrade.data.task_arrays import TaskArrays
from metatrade.market.config import TradingEnvConfig, episode_bounds, validate_arrays

DEFAULT_VOL_BARS = 256
"""bars of close-to-close returns before a window that its causal volatility is taken over"""


@dataclass
class PnlWindows:
    """T tasks x W windows x N bars (see the module docstring for the fields' meaning).

    Attributes:
        features: per-bar features of bars s-L+1 .. s+N-1 [T, W, N+L-1, F].
        gap, bar, notional, square, squared: per decision bar [T, W, N].
        entry_fee, exit_fee: per order, fraction of C0 [T, W].
        prop, slip: proportional cost and slippage rates (bps / 1e4) [T, W].
        buy_rate, sell_rate: the side-only rates of a buy / sell order (bps / 1e4) [T, W].
        vol: causal per-bar volatility of close-to-close returns up to bar s [T, W].
        start: first decision bar s of each window, a row of its task's arrays [T, W].
    """

    features: Tensor
    gap: Tensor
    bar: Tensor
    notional: Tensor
    square: Tensor
    squared: Tensor
    entry_fee: Tensor
    exit_fee: Tensor
    prop: Tensor
    slip: Tensor
    buy_rate: Tensor
    sell_rate: Tensor
    vol: Tensor
    start: Tensor

    @property
    def num_tasks(self) -> int:
        return self.gap.shape[0]

    @property
    def num_windows(self) -> int:
        return self.gap.shape[-2]

    @property
    def window_bars(self) -> int:
        return self.gap.shape[-1]

    @property
    def lookback(self) -> int:
        return self.features.shape[-2] - self.window_bars + 1

    def tensors(self) -> dict[str, Tensor]:
        """All fields as a dict: a pytree ``torch.func.vmap`` maps over (leading [T] axis)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> PnlWindows:
        return cls(**tensors)

    def to(self, dtype: torch.dtype) -> PnlWindows:
        """Floating-point fields cast to ``dtype`` (``start`` stays int64)."""
        return PnlWindows(
            **{k: v.to(dtype) if v.is_floating_point() else v for k, v in self.tensors().items()}
        )


def window_quantity(arrays: TaskArrays, starts: np.ndarray, config: TradingEnvConfig) -> np.ndarray:
    """Units each window trades [W]: what ``config.sizer`` buys with the initial capital at
    the close of the window's first bar (whole lots; the ledger sizes at each entry)."""
    costs, spec = config.market_for(arrays)
    price = arrays.close[starts]
    ones = np.ones(len(starts))
    lot = np.asarray(spec.lot_at(arrays.timestamps[starts]), dtype=np.float64)
    units = config.sizer.units_array(
        ones * config.initial_capital,
        price,
        ones * costs.entry_fee,
        ones * costs.proportional_rate,
        lot,
    )
    if np.any(units < lot):
        i = int(np.argmax(units < lot))
        raise ValueError(
            f"task {arrays.task}: initial capital {config.initial_capital} cannot buy one lot "
            f"of {int(lot[i])} at {price[i]:.2f} (row {starts[i]}) with {config.sizer!r}; "
            "raise initial_capital or the sizer's fraction"
        )
    return np.asarray(units, dtype=np.float64)


def causal_volatility(close: np.ndarray, starts: np.ndarray, vol_bars: int) -> np.ndarray:
    """Std of the close-to-close returns of the ``vol_bars`` bars up to each start (inclusive).

    Only bars <= s are used, so scaling a window's loss by it looks at nothing the policy
    could not have seen at its first decision.
    """
    if np.any(starts < 2):
        raise ValueError(
            f"windows start at bar {int(starts.min())}: a causal volatility needs >= 2"
        )
    ret = np.concatenate([[0.0], close[1:] / close[:-1] - 1.0])
    c1, c2 = np.cumsum(ret), np.cumsum(ret * ret)
    lo = np.maximum(starts - vol_bars, 0)  # returns lo+1 .. s
    n = starts - lo
    mean = (c1[starts] - c1[lo]) / n
    var = np.maximum((c2[starts] - c2[lo]) / n - mean * mean, 0.0) * n / np.maximum(n - 1, 1)
    return np.sqrt(var)


def _task_windows(
    arrays: TaskArrays, starts: np.ndarray, n_bars: int, config: TradingEnvConfig, vol_bars: int
) -> dict[str, np.ndarray]:
    """The fields of one task's windows as numpy arrays (float64; features as stored)."""
    first, last, _ = episode_bounds(arrays, config.with_overrides(episode_length=n_bars))
    bad = (starts < first) | (starts > last)
    if bad.any():
        raise ValueError(
            f"task {arrays.task}: window start {int(starts[bad][0])} outside [{first}, {last}] "
            f"for split {config.split!r}, lookback {config.lookback}, window_bars {n_bars}"
        )
    costs, _ = config.market_for(arrays)
    t = starts[:, None] + np.arange(n_bars)  # decision bars [W, N]
    c0, o1, c1 = arrays.close[t], arrays.open[t + 1], arrays.close[t + 1]
    scale = window_quantity(arrays, starts, config)[:, None] / config.initial_capital
    gap, bar, notional, square = scale * (o1 - c0), scale * (c1 - o1), scale * o1, scale * c1
    squared = (arrays.session_end[t + 1] & config.squares_off(arrays)).astype(np.float64)
    squared[:, -1] = 1.0  # the final exit at the window's last close
    rows = (starts - config.lookback + 1)[:, None] + np.arange(n_bars + config.lookback - 1)
    per_window = np.ones(len(starts))
    cap = config.initial_capital
    return {
        "features": arrays.features[rows],
        "gap": gap,
        "bar": bar,
        "notional": notional,
        "square": square * squared,
        "squared": squared,
        "entry_fee": per_window * costs.entry_fee / cap,
        "exit_fee": per_window * costs.exit_fee / cap,
        "prop": per_window * costs.proportional_rate,
        "slip": per_window * costs.slippage_rate,
        "buy_rate": per_window * costs.buy_rate,
        "sell_rate": per_window * costs.sell_rate,
        "vol": causal_volatility(arrays.close, starts, vol_bars),
        "start": starts.astype(np.int64),
    }


def build_windows(
    arrays_list: Sequence[TaskArrays],
    starts: np.ndarray,
    *,
    window_bars: int,
    config: TradingEnvConfig,
    vol_bars: int = DEFAULT_VOL_BARS,
    dtype: torch.dtype = torch.float32,
) -> PnlWindows:
    """Windows of ``window_bars`` decisions starting on ``starts`` [T, W] (rows of each task).

    ``config`` supplies what the ledger would use: lookback, feature columns, costs per
    instrument, initial capital, sizer (see the module docstring), ``square_off`` and the
    ``split`` whose rows the windows must trade in (lookback rows may precede it).
    """
    starts = np.asarray(starts, dtype=np.int64)
    if starts.ndim != 2 or starts.shape[0] != len(arrays_list):
        raise ValueError(
            f"starts shape {starts.shape}: expected [T={len(arrays_list)} tasks, W windows]"
        )
    if window_bars < 1:
        raise ValueError(f"window_bars={window_bars}: use >= 1")
    arrays_list = [a.select_features(config.features) for a in arrays_list]
    if len({a.num_features for a in arrays_list}) != 1:
        raise ValueError("all tasks need the same feature width F")
    per_task = []
    for arrays, row in zip(arrays_list, starts, strict=True):
        validate_arrays(arrays)
        per_task.append(_task_windows(arrays, row, window_bars, config, vol_bars))
    out = {}
    for name in per_task[0]:
        stacked = torch.from_numpy(np.stack([p[name] for p in per_task]))
        out[name] = stacked if name == "start" else stacked.to(dtype)
    return PnlWindows(**out)


def _split_bounds(arrays: TaskArrays, config: TradingEnvConfig, n_bars: int) -> tuple[int, int]:
    first, last, _ = episode_bounds(arrays, config.with_overrides(episode_length=n_bars))
    return max(first, 2), last  # >= 2: the causal volatility needs two returns


def consecutive_windows(
    arrays_list: Sequence[TaskArrays],
    firsts: Sequence[int] | np.ndarray,
    *,
    window_bars: int,
    num_windows: int,
    config: TradingEnvConfig,
    vol_bars: int = DEFAULT_VOL_BARS,
    dtype: torch.dtype = torch.float32,
) -> PnlWindows:
    """``num_windows`` back-to-back windows per task, the first starting on ``firsts[i]``."""
    starts = np.asarray(firsts, dtype=np.int64)[:, None] + window_bars * np.arange(num_windows)
    return build_windows(
        arrays_list, starts, window_bars=window_bars, config=config, vol_bars=vol_bars, dtype=dtype
    )


def windows_before(
    arrays_list: Sequence[TaskArrays],
    ends: Sequence[int] | np.ndarray,
    *,
    window_bars: int,
    num_windows: int,
    config: TradingEnvConfig,
    vol_bars: int = DEFAULT_VOL_BARS,
    dtype: torch.dtype = torch.float32,
) -> PnlWindows:
    """The ``num_windows * window_bars`` bars just before bar ``ends[i]`` of each task.

    The last window's last fill and mark is bar ``ends[i]``, so adapting on these uses
    prices up to close[ends[i]], all known when the policy trades from bar ``ends[i]`` on
    (walk-forward / test-time adaptation on the recent past).
    """
    firsts = np.asarray(ends, dtype=np.int64) - num_windows * window_bars
    return consecutive_windows(
        arrays_list,
        firsts,
        window_bars=window_bars,
        num_windows=num_windows,
        config=config,
        vol_bars=vol_bars,
        dtype=dtype,
    )


def latest_windows(
    arrays_list: Sequence[TaskArrays],
    *,
    num_windows: int,
    config: TradingEnvConfig,
    vol_bars: int = DEFAULT_VOL_BARS,
    dtype: torch.dtype = torch.float32,
) -> PnlWindows:
    """Per task, ``num_windows`` (fewer when the split is short; the same count for every
    task) back-to-back windows of ``config.episode_length`` bars ending at the last bar of
    ``config.split``: the most recent past, what test-time adaptation adapts on."""
    window_bars = config.episode_length
    if window_bars is None:
        raise ValueError("latest_windows: config.episode_length sets the window length; got None")
    ends = [a.split_range(config.split)[1] - 1 for a in arrays_list]
    firsts = [_split_bounds(a, config, window_bars)[0] for a in arrays_list]
    room = min(end - first for end, first in zip(ends, firsts, strict=True))
    count = max(1, min(num_windows, room // window_bars))
    return windows_before(
        arrays_list,
        ends,
        window_bars=window_bars,
        num_windows=count,
        config=config,
        vol_bars=vol_bars,
        dtype=dtype,
    )


def sample_window_pairs(
    arrays_list: Sequence[TaskArrays],
    *,
    window_bars: int,
    num_windows: int,
    config: TradingEnvConfig,
    rng: np.random.Generator | int | None = None,
    num_eval_windows: int | None = None,
    gap: int = 0,
    split: str | None = None,
    vol_bars: int = DEFAULT_VOL_BARS,
    dtype: torch.dtype = torch.float32,
) -> tuple[PnlWindows, PnlWindows]:
    """(adaptation, evaluation) windows: adapt on the recent past, trade what follows.

    Per task a cut bar c is drawn uniformly; the adaptation windows are the
    ``num_windows`` back-to-back windows ending at c (``windows_before``), the evaluation
    windows the ``num_eval_windows`` (default ``num_windows``) back-to-back windows from
    bar c + ``gap`` on. Every evaluation fill is after every adaptation fill.
    ``split`` (default ``config.split``) is the time split both blocks trade in.
    """
    rng = np.random.default_rng(rng)
    n_eval = num_windows if num_eval_windows is None else num_eval_windows
    if min(num_windows, n_eval, window_bars) < 1 or gap < 0:
        raise ValueError("sample_window_pairs: window_bars, num_windows >= 1 and gap >= 0")
    cfg = config if split is None else config.with_overrides(split=split)
    cuts = []
    for arrays in arrays_list:
        first, last = _split_bounds(arrays, cfg, window_bars)
        lo, hi = first + num_windows * window_bars, last - gap - (n_eval - 1) * window_bars
        if hi < lo:
            raise ValueError(
                f"task {arrays.task}: split {cfg.split!r} allows window starts [{first}, {last}]: "
                f"too few bars for {num_windows} + {n_eval} windows of {window_bars} bars "
                f"(gap {gap}); use fewer/shorter windows or a longer split"
            )
        cuts.append(int(rng.integers(lo, hi + 1)))
    adapt = windows_before(
        arrays_list,
        cuts,
        num_windows=num_windows,
        window_bars=window_bars,
        config=cfg,
        vol_bars=vol_bars,
        dtype=dtype,
    )
    evaluate = consecutive_windows(
        arrays_list,
        np.asarray(cuts) + gap,
        num_windows=n_eval,
        window_bars=window_bars,
        config=cfg,
        vol_bars=vol_bars,
        dtype=dtype,
    )
    return adapt, evaluate
