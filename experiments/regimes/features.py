"""Candidate per-bar input features for the issue-19 research prototype (numpy, causal).

Each group is a generic, standard quant feature, not a copy of one generator's formula:
lagged returns, a time-of-day basis, the opening gap by time of day, and two interactions
of the last return with a state (volatility regime, recent autocorrelation). Every column
is causal (row t uses bars 0..t) and is z-scored per task afterwards, as the product's
feature pipeline does (``metatrade.data.features``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from metatrade.data.regimes import session_clock


class Bars:
    """One task's bars as arrays plus the derived series every group reads."""

    def __init__(self, open_: np.ndarray, close: np.ndarray, timestamps: np.ndarray) -> None:
        self.open, self.close, self.timestamps = open_, close, timestamps
        self.ret = np.zeros(len(close))
        self.ret[1:] = np.log(close[1:] / close[:-1])  # close to close (gaps included)
        self.body = np.log(close / open_)
        self.gap = np.zeros(len(close))
        self.gap[1:] = np.log(open_[1:] / close[:-1])
        self.clock = session_clock(timestamps)


def _rolling_std(x: np.ndarray, w: int) -> np.ndarray:
    return pd.Series(x).rolling(w, min_periods=2).std().bfill().to_numpy()


def lags(b: Bars, n: int) -> np.ndarray:
    """r_t, r_{t-1}, ..., r_{t-n+1}: the last n close-to-close log returns [N, n]."""
    out = np.zeros((len(b.ret), n))
    for k in range(n):
        out[k:, k] = b.ret[: len(b.ret) - k]
    return out


def lags_volnorm(b: Bars, n: int, window: int = 48) -> np.ndarray:
    """The last n returns over their rolling std (``window`` bars): vol-normalised lags."""
    return lags(b, n) / np.maximum(_rolling_std(b.ret, window), 1e-12)[:, None]


def tod_onehot(b: Bars, buckets: int) -> np.ndarray:
    """One-hot of the equal-width session bucket of bar t [N, buckets]."""
    idx = np.minimum((b.clock.fraction * buckets).astype(int), buckets - 1)
    return np.eye(buckets)[idx]


def tod_next_onehot(b: Bars, buckets: int) -> np.ndarray:
    """One-hot of the session bucket of the *next* bar (the bar a position decided now is
    held over; at a session's last bar: the next session's first) [N, buckets]."""
    frac = np.append(b.clock.fraction[1:], 0.0)
    idx = np.minimum((frac * buckets).astype(int), buckets - 1)
    return np.eye(buckets)[idx]


def tod_fourier(b: Bars, order: int) -> np.ndarray:
    """sin and cos of 2 pi k (session fraction), k = 1..order [N, 2 order]."""
    ang = 2 * np.pi * b.clock.fraction[:, None] * np.arange(1, order + 1)[None, :]
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)


def opening_gap(b: Bars) -> np.ndarray:
    """Today's opening gap (log open of the session's first bar over the previous close), held
    through the session [N]."""
    session = np.cumsum(b.clock.first) - 1
    opening = np.flatnonzero(b.clock.first)
    return b.gap[opening[session]]


def gap_by_tod(b: Bars, buckets: int) -> np.ndarray:
    """Today's opening gap times the one-hot session bucket [N, buckets]."""
    return opening_gap(b)[:, None] * tod_onehot(b, buckets)


def gap_decay(b: Bars, scales: tuple[int, ...] = (3, 12)) -> np.ndarray:
    """Today's opening gap times exp(-bars since the open / s) for each scale s [N, S]."""
    session = np.cumsum(b.clock.first) - 1
    slot = np.arange(len(b.ret)) - np.flatnonzero(b.clock.first)[session]
    g = opening_gap(b)
    return np.stack([g * np.exp(-slot / s) for s in scales], axis=1)


def vol_ratio(b: Bars, short: int = 12, long: int = 96) -> np.ndarray:
    """log(realised vol over ``short`` bars / over ``long`` bars) [N]."""
    return np.log(
        np.maximum(_rolling_std(b.ret, short), 1e-12) / np.maximum(_rolling_std(b.ret, long), 1e-12)
    )


def ret_x_volratio(b: Bars, short: int = 24, long: int = 256) -> np.ndarray:
    """The last return times the volatility regime (log vol ratio) [N, 1]."""
    return (b.ret * vol_ratio(b, short, long))[:, None]


def rolling_autocorr(b: Bars, window: int = 32) -> np.ndarray:
    """Lag-1 autocorrelation of returns over the last ``window`` bars [N]."""
    s = pd.Series(b.ret)
    return s.rolling(window, min_periods=4).corr(s.shift(1)).fillna(0.0).to_numpy()


def ret_x_autocorr(b: Bars, window: int = 32) -> np.ndarray:
    """The last return times its recent lag-1 autocorrelation [N, 1]."""
    return (b.ret * rolling_autocorr(b, window))[:, None]


def same_slot_mean(b: Bars, days: int) -> np.ndarray:
    """Mean intraday return (body) of the bar in the next bar's session slot over the
    previous ``days`` sessions (seasonal lags, as in Heston, Korajczyk and Sadka, 2010),
    in units of the rolling vol [N, 1]. Assumes full sessions of equal length."""
    per_day = int(np.bincount(np.cumsum(b.clock.first) - 1).max())
    n = len(b.body)
    acc = np.zeros(n)
    for k in range(1, days + 1):
        lag = k * per_day - 1  # bar t+1-k*per_day seen from bar t
        acc[lag:] += b.body[: n - lag]
    return (acc / days / np.maximum(_rolling_std(b.ret, 256), 1e-12))[:, None]


GROUPS: dict[str, Callable[[Bars, int], np.ndarray]] = {
    "lags": lags,  # arg: number of lags
    "lagsv": lags_volnorm,  # arg: number of lags
    "tod": tod_onehot,  # arg: buckets
    "todn": tod_next_onehot,  # arg: buckets
    "fourier": tod_fourier,  # arg: order
    "gaptod": gap_by_tod,  # arg: buckets
    "gapdecay": lambda b, n: gap_decay(b),
    "sslot": same_slot_mean,  # arg: sessions
    "volx": lambda b, n: ret_x_volratio(b),
    "acx": lambda b, n: ret_x_autocorr(b, n or 32),
    "body": lambda b, n: lags(_body_bars(b), n),
}


def _body_bars(b: Bars) -> Bars:
    out = Bars.__new__(Bars)
    out.__dict__.update(b.__dict__)
    out.ret = b.body
    return out


def group_of(name: str) -> str:
    """The feature group of a column name (``"lags2@1"`` -> ``"lags"``)."""
    return name.split("@")[0].rstrip("0123456789")


def build(b: Bars, spec: str) -> tuple[np.ndarray, list[str]]:
    """Columns [N, F] and names of a spec like ``"lags:8,tod:6,gaptod:6,volx,acx:32"``;
    ``"L4|..."``: every column over a window of the last 4 bars (the product's env.lookback
    layout, [L, F] row-major, oldest first)."""
    window, _, spec = spec.rpartition("|")
    x, names = _columns(b, spec)
    if not window:
        return x, names
    lookback = int(window.lstrip("L"))
    shifted, wnames = [], []
    for k in range(lookback - 1, -1, -1):  # oldest first, as the envs flatten windows
        xk = np.zeros_like(x)
        xk[k:] = x[: len(x) - k]
        shifted.append(xk)
        wnames += [f"{n}@{k}" for n in names]
    return np.concatenate(shifted, axis=1), wnames


def _columns(b: Bars, spec: str) -> tuple[np.ndarray, list[str]]:
    cols, names = [], []
    for part in spec.split(","):
        name, _, arg = part.partition(":")
        x = GROUPS[name](b, int(arg) if arg else 0)
        x = x if x.ndim == 2 else x[:, None]
        cols.append(x)
        names += [f"{name}{i}" for i in range(x.shape[1])]
    return np.concatenate(cols, axis=1), names
