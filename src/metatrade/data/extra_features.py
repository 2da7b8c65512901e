"""Registered features that let one exact inner step implement the classical adaptive rules
and more (issue 19; docs/regimes.md has the research behind each). They are entries of the
one feature registry (``metatrade.data.features.register_feature``), so ``env.features``
selects them by name like any other column; a *group* name (``next_sixth``,
``open_gap_decay``) selects all of its columns, and the linear policy gives each group one
gain (``feature_group``).

The gradient of the expected P&L of a policy whose long-minus-short logit is linear in a
feature x, at zero weight, is proportional to sum_t x_t r_{t+1}: the covariance of x with the
next return. One step therefore implements the plug-in rule of every feature it is given,
each weighted by its estimated strength. These features are generic quant inputs, not any
generator's formula:

=======================  ====================================================================
name (group)             value at bar t
=======================  ====================================================================
``next_sixth_{i}``       one-hot (i = 0..5) of the sixth of the session the *next* bar starts
(``next_sixth``)         in (the bar a position decided now is held over; after a session's
                         last bar: the next session's first), from the market's calendar
``open_gap_decay_{s}``   today's opening gap log(open of the session's first bar / previous
(``open_gap_decay``)     close) x exp(-bars since that first bar / s), s = 3 and 12
``ret_x_volratio``       logret_1 x log(realised vol over 24 bars / over 256 bars): the last
                         return in the volatility regime
``ret_x_autocorr_32``    logret_1 x the lag-1 autocorrelation of 1-bar returns over the last
                         32 bars: the last return in the recent autocorrelation regime
``tod_drift_512``        the mean 1-bar log return earned over the sixth of the session the
                         next bar starts in, over the last 512 bars (0 before any): the
                         time-of-day rule's estimate (Heston, Korajczyk & Sadka 2010), rolling
=======================  ====================================================================

Sessions are the calendar's (``Bars.sessions``: ``metatrade.data.calendar``), so the
features mean the same on any market. Every column is causal (row t uses bars 0..t and the
session schedule) and defined from row 48 on (within the warm-up rows every task drops); the
feature pipeline z-scores them with the train split's statistics like every other column.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # features.py imports this module to register it: no import back at load
    from metatrade.data.features import Bars

SIXTHS = 6
GAP_SCALES = (3, 12)
_MINUTE_NS = 60 * 10**9


def session_first(bars: Bars) -> np.ndarray:
    """True on each session's first bar (and on row 0), bool [N]."""
    first = np.ones(len(bars.close), dtype=bool)
    first[1:] = bars.sessions.label[1:] != bars.sessions.label[:-1]
    return first


def next_bar_sixth(bars: Bars) -> np.ndarray:
    """The sixth (0..5) of its session the next bar starts in, int [N]: from the calendar's
    open and close of the bar's session; after a session's last bar, the next session's
    first (sixth 0)."""
    s = bars.sessions
    nxt = np.asarray(bars.timestamps, dtype=np.int64) + bars.bar_minutes * _MINUTE_NS
    length = np.maximum(s.close - s.open, 1)
    fraction = (nxt - s.open) / length
    fraction = np.where(nxt >= s.close, 0.0, fraction)
    return np.clip((fraction * SIXTHS).astype(np.int64), 0, SIXTHS - 1)


def _next_sixth(bars: Bars, *, sixth: int) -> np.ndarray:
    return (next_bar_sixth(bars) == sixth).astype(np.float64)


def _open_gap_decay(bars: Bars, *, scale: float) -> np.ndarray:
    first = session_first(bars)
    opening = np.flatnonzero(first)
    session = np.cumsum(first) - 1
    gap = np.zeros(len(bars.close))  # the series' first session has no gap: 0
    gap[1:] = np.log(bars.open[1:] / bars.close[:-1])
    since = np.arange(len(bars.close)) - opening[session]
    return gap[opening[session]] * np.exp(-since / scale)


def _rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(x).rolling(window, min_periods=min(window, 24)).std().to_numpy()


def _ret_x_volratio(bars: Bars) -> np.ndarray:
    r = bars.log_return
    ratio = np.log(np.maximum(_rolling_std(r, 24), 1e-12) / np.maximum(_rolling_std(r, 256), 1e-12))
    return r * ratio


def _ret_x_autocorr(bars: Bars, *, window: int) -> np.ndarray:
    s = pd.Series(bars.log_return)
    ac = s.rolling(window, min_periods=8).corr(s.shift(1)).fillna(0.0).to_numpy()
    return bars.log_return * ac


def _tod_drift(bars: Bars, *, window: int) -> np.ndarray:
    """Mean of the returns earned over each sixth in the last ``window`` bars, read at the
    sixth of the next bar: causal (the return of bar s is known at s)."""
    ahead = next_bar_sixth(bars)
    held = np.empty_like(ahead)  # the sixth each bar's own return was earned over
    held[0], held[1:] = 0, ahead[:-1]
    r = np.nan_to_num(bars.log_return)
    out = np.zeros(len(r))
    for i in range(SIXTHS):
        mine = pd.Series(np.where(held == i, r, np.nan))
        mean = mine.rolling(window, min_periods=1).mean().fillna(0.0).to_numpy()
        out = np.where(ahead == i, mean, out)
    return out


def register() -> None:
    """Add the features above to the registry (``metatrade.data.features`` calls it once)."""
    from metatrade.data.features import register_feature

    for i in range(SIXTHS):
        fn = functools.partial(_next_sixth, sixth=i)
        register_feature(f"next_sixth_{i}", fn, group="next_sixth")
    for s in GAP_SCALES:
        fn = functools.partial(_open_gap_decay, scale=float(s))
        register_feature(f"open_gap_decay_{s}", fn, group="open_gap_decay")
    register_feature("ret_x_volratio", _ret_x_volratio)
    register_feature("ret_x_autocorr_32", functools.partial(_ret_x_autocorr, window=32))
    register_feature("tod_drift_512", functools.partial(_tod_drift, window=512))
