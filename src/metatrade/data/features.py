"""Causal, instrument-agnostic features of one task, vectorised over the whole series.

Every feature is a ratio, a log-return or a bounded oscillator, so Nifty at 22,000 and Bank
Nifty at 48,000 look alike; raw price levels and volume (always 0 for an index) never enter.
Indicators come from TA-Lib, whose functions are causal: the value at row t uses bars 0..t.

Pipeline (``build_features``): raw features -> drop warm-up rows (the first rows where any
indicator is still undefined; dropped, never zero-filled) -> z-score with the *train split's*
mean and std -> clip to +-``CLIP``. The z-score is one affine map per task and feature, so
``features[t]`` for t in validation/test depends on bars 0..t only; inside the train split
the scale itself comes from the whole train split (the usual convention; documented in
docs/data.md).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import talib

from metatrade.data.calendar import Sessions, assign_sessions, resolve_calendar, session_ends
from metatrade.data.instruments import Instrument, Market
from metatrade.data.naming import parse_timeframe
from metatrade.data.splits import SplitConfig
from metatrade.data.task_arrays import TaskArrays, TaskId
from metatrade.errors import DataError

# Bump whenever a feature's definition changes: it is part of the on-disk cache key.
FEATURE_VERSION = 3
CLIP = 10.0
_MINUTE_NS = 60 * 10**9

RETURN_HORIZONS = (1, 3, 6, 12, 24)
VOL_WINDOWS = (12, 48)

FEATURE_NAMES: tuple[str, ...] = (
    *(f"logret_{k}" for k in RETURN_HORIZONS),  # log(close_t / close_{t-k})
    *(f"rvol_{w}" for w in VOL_WINDOWS),  # std of 1-bar log returns over w bars
    "range_rel",  # log(high / low) of the bar
    "natr_14",  # ATR(14) / close
    "rsi_14",  # (RSI(14) - 50) / 50, in [-1, 1]
    "macd_rel",  # MACD(12, 26) line / close
    "macd_signal_rel",  # MACD signal(9) / close
    "macd_hist_rel",  # MACD histogram / close
    "bb_pos",  # (close - middle) / (upper - lower) of Bollinger(20, 2)
    "close_loc",  # (close - low) / (high - low) - 0.5: where the bar closed in its range
    "body",  # log(close / open)
    "gap",  # log(open_t / close_{t-1}): overnight and intraday gaps
    "sma_dist_50",  # log(close / SMA(50))
    "adx_14",  # ADX(14) / 100: trend strength
    "minutes_since_open",  # (bar start - session open) / session length; 0 for daily bars
    "minutes_to_close",  # (session close - bar end) / session length; 0 for daily bars
    "day_of_week",  # (weekday of the session - 2) / 2, Monday -1 .. Friday +1
)
"""The standard features: ``raw_features``' columns, and what a task's arrays hold unless
``env.features`` selects others (``available_features()`` lists every name)."""


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (a flat bar or a flat window carries no position signal)."""
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    out[np.isnan(num) | np.isnan(den)] = np.nan
    return out


def raw_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timestamps: np.ndarray,
    *,
    bar_minutes: int,
    sessions: Sessions,
) -> np.ndarray:
    """Unnormalised features, float64 [N, F] in ``FEATURE_NAMES`` order; NaN in warm-up rows.

    Inputs are float64 [N] bars sorted in time, ``timestamps`` int64 ns UTC [N] and the
    session of each bar (``metatrade.data.calendar.assign_sessions``), which the time
    features are measured against (``time_features``).
    """
    o, h, lo, c = (np.ascontiguousarray(x, dtype=np.float64) for x in (open_, high, low, close))
    n = len(c)
    log_c = np.log(c)
    cols: list[np.ndarray] = []
    for k in RETURN_HORIZONS:
        r = np.full(n, np.nan)
        r[k:] = log_c[k:] - log_c[:-k]
        cols.append(r)
    r1 = cols[0]
    for w in VOL_WINDOWS:
        cols.append(talib.STDDEV(r1, timeperiod=w, nbdev=1.0))
    cols.append(np.log(h / lo))
    cols.append(talib.NATR(h, lo, c, timeperiod=14) / 100.0)
    cols.append((talib.RSI(c, timeperiod=14) - 50.0) / 50.0)
    macd, signal, hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    cols += [macd / c, signal / c, hist / c]
    # matype left at its default, 0 = simple moving average (the stub types it as an enum)
    upper, middle, lower = talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0)
    cols.append(_safe_div(c - middle, upper - lower))
    cols.append(_safe_div(c - lo, h - lo) - 0.5)
    cols.append(np.log(c / o))
    gap = np.full(n, np.nan)
    gap[1:] = np.log(o[1:] / c[:-1])
    cols.append(gap)
    cols.append(np.log(c / talib.SMA(c, timeperiod=50)))
    cols.append(talib.ADX(h, lo, c, timeperiod=14) / 100.0)

    cols += time_features(timestamps, sessions, bar_minutes=bar_minutes)
    return np.stack(cols, axis=1)


def time_features(
    timestamps: np.ndarray, sessions: Sessions, *, bar_minutes: int
) -> list[np.ndarray]:
    """``minutes_since_open``, ``minutes_to_close``, ``day_of_week`` [N] each: where a bar
    lies in its own session (the exchange's local clock: DST, early closes and sessions that
    open the evening before are the calendar's), as a fraction of the session's length, and
    the weekday of the session. A bar as long as a session or longer (daily, weekly) has no
    place inside one: both minute features are 0 (a daily bar's timestamp is a label, and
    reading a clock time off it would turn daylight saving into a feature)."""
    ts = np.asarray(timestamps, dtype=np.int64)
    length = sessions.minutes
    if bar_minutes >= np.nanmax(length, initial=0.0):
        zero = np.zeros(len(ts))
        since, to_close = zero, zero.copy()
    else:
        since = ((ts - sessions.open) / _MINUTE_NS) / length
        to_close = ((sessions.close - ts) / _MINUTE_NS - bar_minutes) / length
    weekday = ((sessions.label + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday
    return [since, to_close, (weekday - 2.0) / 2.0]


# ---- Registered features: named columns beyond the standard set --------------------------------
@dataclass(frozen=True)
class Bars:
    """What a registered feature reads: one task's bars (float64 [N]) and bar start times
    (int64 ns UTC [N]), sorted in time."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    timestamps: np.ndarray
    bar_minutes: int
    sessions: Sessions  # each bar's session in the exchange's clock (``assign_sessions``)

    @functools.cached_property
    def log_return(self) -> np.ndarray:
        """One-bar log return log(close_t / close_{t-1}), NaN on row 0."""
        r = np.full(len(self.close), np.nan)
        r[1:] = np.diff(np.log(self.close))
        return r

    @functools.cached_property
    def volatility(self) -> np.ndarray:
        """Causal volatility: std of the last ``VOL_SCALE_BARS`` one-bar log returns up to
        and including row t (``rvol_48`` before its z-score)."""
        return talib.STDDEV(self.log_return, timeperiod=VOL_SCALE_BARS, nbdev=1.0)


FeatureFn = Callable[[Bars], np.ndarray]
"""A registered feature: bars -> float [N], causal (row t reads bars 0..t), NaN in its warm-up
rows (at most ``feature_warmup_rows()`` of the standard set, else every task loses more)."""
REGISTERED_FEATURES: dict[str, FeatureFn] = {}
"""name -> definition of every feature beyond ``FEATURE_NAMES``, in column order (add one with
``register_feature``; bump ``FEATURE_VERSION`` when a definition changes)."""
FEATURE_GROUPS: dict[str, str] = {}
"""registered column -> its group, where it shares one with other columns (the six columns of
a one-hot): ``env.features`` may name the group for all of them, and the linear policy gives
a group one gain (``feature_group``)"""
VOL_SCALE_BARS = 48
RETURN_LAGS = 8


def register_feature(name: str, fn: FeatureFn, *, group: str | None = None) -> None:
    """Add a named feature that ``env.features`` can select (computed for every task);
    ``group``: a name shared with other columns of one feature (selects them together)."""
    if name in FEATURE_NAMES or name in REGISTERED_FEATURES:
        raise ValueError(f"feature {name!r} is already defined")
    if group is not None and (group in FEATURE_NAMES or group in REGISTERED_FEATURES):
        raise ValueError(f"feature group {group!r} has the name of a feature")
    REGISTERED_FEATURES[name] = fn
    if group is not None:
        FEATURE_GROUPS[name] = group


def available_features() -> tuple[str, ...]:
    """Every feature name ``env.features`` can select: the standard set, then the registered."""
    return FEATURE_NAMES + tuple(REGISTERED_FEATURES)


def feature_group(name: str) -> str:
    """The group of a feature column: its registered group, else the column itself."""
    return FEATURE_GROUPS.get(name, name)


def expand_feature_names(names: Sequence[str]) -> list[str]:
    """``names`` with each group name (``next_sixth``) replaced by its columns in registry
    order; every other name kept as given (``check_feature_names`` judges them)."""
    members: dict[str, list[str]] = {}
    for column, group in FEATURE_GROUPS.items():
        members.setdefault(group, []).append(column)
    return [c for n in names for c in members.get(n, [n])]


def _lagged_scaled_return(bars: Bars, *, lag: int) -> np.ndarray:
    """r_{t-lag} / sigma_t: the one-bar log return ``lag`` bars back in units of today's causal
    volatility (every lag on one scale, so a window of them keeps its shape across regimes)."""
    r = np.full(len(bars.close), np.nan)
    r[lag:] = bars.log_return[: len(r) - lag]
    return _safe_div(r, bars.volatility)


for _lag in range(RETURN_LAGS):
    register_feature(f"ret_1_lag{_lag}", functools.partial(_lagged_scaled_return, lag=_lag))


def all_raw_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    timestamps: np.ndarray,
    *,
    bar_minutes: int,
    sessions: Sessions,
) -> np.ndarray:
    """``raw_features`` followed by every registered feature: float64 [N, F_all] in
    ``available_features()`` order (computed once; a selection picks columns after)."""
    base = raw_features(
        open_, high, low, close, timestamps, bar_minutes=bar_minutes, sessions=sessions
    )
    if not REGISTERED_FEATURES:
        return base
    o, h, lo, c = (np.asarray(x, dtype=np.float64) for x in (open_, high, low, close))
    bars = Bars(o, h, lo, c, np.asarray(timestamps), bar_minutes, sessions)
    extra = [np.asarray(fn(bars), dtype=np.float64) for fn in REGISTERED_FEATURES.values()]
    return np.concatenate([base, np.stack(extra, axis=1)], axis=1)


def check_feature_names(names: Sequence[str] | None, *, what: str = "") -> None:
    """Refuse unknown or repeated names in one line, with close matches."""
    if names is None:
        return
    known = available_features() + tuple(dict.fromkeys(FEATURE_GROUPS.values()))
    prefix = f"{what}: " if what else ""
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
            raise ValueError(f"{prefix}unknown feature {name!r}; {hint}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated or not names:
        raise ValueError(f"{prefix}list each feature once (repeated: {repeated}), at least one")


def warmup_rows(raw: np.ndarray) -> int:
    """Number of leading rows to drop: after them every feature is defined."""
    bad = ~np.isfinite(raw).all(axis=1)
    if not bad.any():
        return 0
    last_bad = int(np.flatnonzero(bad)[-1])
    return last_bad + 1


@functools.cache
def feature_warmup_rows() -> int:
    """Warm-up rows every task loses (the longest indicator window of every feature, registered
    ones included: SMA(50) -> 49), measured on a synthetic series so it follows the feature
    definitions."""
    n = 400
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0.0, 1e-3, n)))
    ts = (1_700_000_000 + 60 * np.arange(n, dtype=np.int64)) * 1_000_000_000
    sessions = assign_sessions(ts, resolve_calendar("24/7"), "UTC")
    raw = all_raw_features(
        close, close * 1.001, close * 0.999, close, ts, bar_minutes=1, sessions=sessions
    )
    return warmup_rows(raw)


def normalise(raw: np.ndarray, train: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score ``raw`` [N, F] with rows ``train`` = [start, stop) and clip to +-CLIP.

    Returns ``(features float32 [N, F], mean [F], std [F])``; a constant feature gets std 1.
    """
    a, b = train
    if b - a < 2:
        raise DataError(
            f"the train split has {b - a} rows after warm-up; need at least 2 to normalise "
            "features (use a longer file or a larger train fraction)"
        )
    mean = raw[a:b].mean(axis=0)
    std = raw[a:b].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = np.clip((raw - mean) / std, -CLIP, CLIP)
    return z.astype(np.float32), mean, std


def build_task_arrays(
    task: TaskId,
    bars: pd.DataFrame,
    *,
    splits: SplitConfig,
    instrument: Instrument,
    features: Sequence[str] | None = None,
) -> TaskArrays:
    """The features entry point: clean bars of one task -> ``TaskArrays`` (warm-up dropped,
    splits computed on the remaining rows, features z-scored with the train split's stats,
    sessions and market figures from ``instrument``).

    Every available feature is computed (so every selection drops the same warm-up rows and
    gets the same values); the arrays hold ``features`` (default ``FEATURE_NAMES``), in order.
    """
    ts = np.asarray(bars.index.as_unit("ns").asi8, dtype=np.int64)
    o, h, lo, c = (bars[k].to_numpy(np.float64) for k in ("open", "high", "low", "close"))
    sessions = assign_sessions(ts, instrument.calendar, instrument.timezone)
    bar_minutes = parse_timeframe(task.timeframe).minutes
    raw = all_raw_features(o, h, lo, c, ts, bar_minutes=bar_minutes, sessions=sessions)
    w = warmup_rows(raw)
    if len(ts) - w < 2:
        raise DataError(
            f"task {task}: {len(ts)} bars, but features need {feature_warmup_rows()} warm-up "
            "bars plus data; provide a longer history"
        )
    market = Market.of(instrument, task.timeframe, sessions)
    ts, o, h, lo, c, raw = ts[w:], o[w:], h[w:], lo[w:], c[w:], raw[w:]
    labels = sessions.label[w:]
    ranges = splits.ranges(ts, instrument.timezone)
    normalised, _, _ = normalise(raw, ranges["train"])
    every = TaskArrays(
        task=task,
        timestamps=ts,
        open=o,
        high=h,
        low=lo,
        close=c,
        features=normalised,
        feature_names=available_features(),
        session_end=session_ends(labels),
        bar_minutes=bar_minutes,
        splits=ranges,
        sessions=labels,
        market=market,
    )
    return every.select_features(FEATURE_NAMES if features is None else features)


def _register_extras() -> None:
    """The features of ``metatrade.data.extra_features`` join the registry (one registry)."""
    from metatrade.data.extra_features import register

    register()


_register_extras()
