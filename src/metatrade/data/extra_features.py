"""Optional causal features, selectable by name (not in the default 22 ``FEATURE_NAMES``):
the inputs that let one exact inner step implement the classical adaptive rules and more
(issue 19; docs/regimes.md has the research behind each).

The gradient of the expected P&L of a policy whose long-minus-short logit is linear in a
feature x, at zero weight, is proportional to sum_t x_t r_{t+1}: the covariance of x with the
next return. One step therefore implements the plug-in rule of every feature it is given,
each weighted by its estimated strength. These features are generic quant inputs, not any
generator's formula:

=====================  ======================================================================
name                   value at bar t (columns)
=====================  ======================================================================
``logret_1_lag{k}``    the 1-bar log return k bars ago, k = 1..7 (lagged returns without a
                       lookback window over every other feature)
``next_sixth``         one-hot of the sixth of the session the *next* bar starts in (the bar
                       a position decided now is held over; after a session's last bar: the
                       next session's first), 6 columns ``next_sixth_0`` .. ``next_sixth_5``
``open_gap_decay_{s}`` today's opening gap log(open of the session's first bar / previous
                       close) x exp(-bars since that first bar / s), s = 3 and 12
``ret_x_volratio``     logret_1 x log(realised vol over 24 bars / over 256 bars): the last
                       return in the volatility regime
``ret_x_autocorr_32``  logret_1 x the lag-1 autocorrelation of 1-bar returns over the last
                       32 bars: the last return in the recent autocorrelation regime
=====================  ======================================================================

Every column is causal (row t uses bars 0..t and the session schedule) and defined from row
48 on (within the 49 warm-up rows the default features drop); the feature pipeline z-scores
them with the train split's statistics like every other column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metatrade.data.validation import utc_index


@dataclass(frozen=True)
class BarView:
    """One task's bars as the features read them (float64 [N]; ``timestamps`` int64 ns UTC)."""

    open: np.ndarray
    close: np.ndarray
    timestamps: np.ndarray
    bar_minutes: int
    tz: str = "Asia/Kolkata"
    session_open: str = "09:15"
    session_close: str = "15:30"

    @property
    def logret(self) -> np.ndarray:
        out = np.full(len(self.close), np.nan)
        out[1:] = np.diff(np.log(self.close))
        return out


@dataclass(frozen=True)
class ExtraFeature:
    """A registry entry: its column names and how to compute them ([N, len(columns)])."""

    columns: tuple[str, ...]
    compute: Callable[[BarView], np.ndarray]


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _session_first(v: BarView) -> np.ndarray:
    """True on each local trading day's first bar (and on row 0)."""
    day = np.asarray(utc_index(v.timestamps, v.tz).normalize().asi8)
    first = np.ones(len(day), dtype=bool)
    first[1:] = day[1:] != day[:-1]
    return first


def lagged_return(k: int) -> Callable[[BarView], np.ndarray]:
    def compute(v: BarView) -> np.ndarray:
        r = v.logret
        out = np.full(len(r), np.nan)
        out[k:] = r[: len(r) - k]
        return out[:, None]

    return compute


def next_sixth(v: BarView) -> np.ndarray:
    """One-hot [N, 6] of the session sixth the next bar starts in."""
    local = utc_index(v.timestamps, v.tz)
    minute = np.asarray(local.hour * 60 + local.minute, dtype=np.float64)
    start, stop = _minutes(v.session_open), _minutes(v.session_close)
    nxt = minute + v.bar_minutes
    nxt = np.where(nxt >= stop, start, nxt)  # after the last bar: the next session's first
    idx = np.clip(((nxt - start) / (stop - start) * 6).astype(int), 0, 5)
    return np.eye(6)[idx]


def open_gap_decay(scale: float) -> Callable[[BarView], np.ndarray]:
    def compute(v: BarView) -> np.ndarray:
        first = _session_first(v)
        opening = np.flatnonzero(first)
        session = np.cumsum(first) - 1
        gap = np.zeros(len(v.close))  # the series' first session has no gap: 0
        gap[1:] = np.log(v.open[1:] / v.close[:-1])
        since = np.arange(len(v.close)) - opening[session]
        return (gap[opening[session]] * np.exp(-since / scale))[:, None]

    return compute


def _rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(x).rolling(window, min_periods=min(window, 24)).std().to_numpy()


def ret_x_volratio(v: BarView) -> np.ndarray:
    r = v.logret
    ratio = np.log(np.maximum(_rolling_std(r, 24), 1e-12) / np.maximum(_rolling_std(r, 256), 1e-12))
    return (r * ratio)[:, None]


def ret_x_autocorr(window: int) -> Callable[[BarView], np.ndarray]:
    def compute(v: BarView) -> np.ndarray:
        s = pd.Series(v.logret)
        ac = s.rolling(window, min_periods=8).corr(s.shift(1)).fillna(0.0).to_numpy()
        return (v.logret * ac)[:, None]

    return compute


EXTRA_FEATURES: dict[str, ExtraFeature] = {
    **{
        f"logret_1_lag{k}": ExtraFeature((f"logret_1_lag{k}",), lagged_return(k))
        for k in range(1, 8)
    },
    "next_sixth": ExtraFeature(tuple(f"next_sixth_{i}" for i in range(6)), next_sixth),
    **{
        f"open_gap_decay_{s}": ExtraFeature((f"open_gap_decay_{s}",), open_gap_decay(s))
        for s in (3, 12)
    },
    "ret_x_volratio": ExtraFeature(("ret_x_volratio",), ret_x_volratio),
    "ret_x_autocorr_32": ExtraFeature(("ret_x_autocorr_32",), ret_x_autocorr(32)),
}
"""name -> entry; a name selects all of its columns"""


def extra_features(names: tuple[str, ...], view: BarView) -> tuple[np.ndarray, tuple[str, ...]]:
    """The named extra features of one task: raw values float64 [N, C] and the C column
    names (NaN only in rows < 48). ``KeyError`` naming the choices for an unknown name."""
    unknown = [n for n in names if n not in EXTRA_FEATURES]
    if unknown:
        raise KeyError(f"unknown extra feature(s) {unknown}; choose from {sorted(EXTRA_FEATURES)}")
    cols = [EXTRA_FEATURES[n].compute(view) for n in names]
    columns = tuple(c for n in names for c in EXTRA_FEATURES[n].columns)
    return (np.concatenate(cols, axis=1) if cols else np.zeros((len(view.close), 0))), columns
