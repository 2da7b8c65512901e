"""Tasks whose true rule is one of the classical baselines, each with its oracle positions.

Bars are gap-free (``open[t+1] == close[t]``, as ``metatrade.data.synthetic``), so a position
decided on bar t earns ``r[t+1]``, and the oracle holds the sign of its known conditional mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metatrade.data.features import build_task_arrays
from metatrade.data.splits import SplitConfig
from metatrade.data.synthetic import (
    RegimeParams,
    generate_bars,
    oracle_positions,
    session_timestamps,
    synthetic_instrument,
)
from metatrade.data.task_arrays import TaskArrays, TaskId

SIGMA = 1e-3


def bars_from_returns(r: np.ndarray, bar_minutes: int = 5, price0: float = 20_000.0):
    """Gap-free OHLC bars whose close-to-close log returns are ``r``."""
    close = price0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[price0], close[:-1]])
    index = session_timestamps(len(r), bar_minutes)
    index.name = "datetime"
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.0002,
            "low": np.minimum(open_, close) * 0.9998,
            "close": close,
            "volume": 0.0,
        },
        index=index,
    )


def _arrays(name: str, bars: pd.DataFrame) -> TaskArrays:
    instrument = synthetic_instrument(name)
    return build_task_arrays(TaskId(name, "5"), bars, splits=SplitConfig(), instrument=instrument)


def ar1_task(phi: float, n: int = 12_000, seed: int = 0) -> tuple[TaskArrays, np.ndarray]:
    """AR(1) regime (``data.synthetic``) and its oracle positions."""
    params = RegimeParams(phi, SIGMA)
    a = _arrays(f"AR{seed}", generate_bars(params, n, seed, bar_minutes=5))
    return a, oracle_positions(a.close, params)


def trend_task(
    beta: float, horizon: int, n: int = 12_000, seed: int = 0
) -> tuple[TaskArrays, np.ndarray]:
    """r[t+1] = beta / h x (r[t] + ... + r[t-h+1]) + noise: the next return follows the last
    h bars' return (beta > 0, momentum) or opposes it (beta < 0, reversal); the oracle holds
    sign(beta x that return), which is the momentum / reversal rule with horizon h."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal(n) * SIGMA
    r = np.zeros(n)
    for t in range(horizon, n):
        r[t] = beta / horizon * r[t - horizon : t].sum() + eps[t]
    a = _arrays(f"Trend{seed}", bars_from_returns(r))
    c = np.log(a.close)
    oracle = np.zeros(len(c), dtype=np.int8)
    oracle[horizon:] = np.sign(beta) * np.sign(c[horizon:] - c[:-horizon])
    return a, oracle


def _bucket_of_start(index: pd.DatetimeIndex, buckets: int) -> np.ndarray:
    """Bucket of each bar's start within the 09:15-15:30 session (local time)."""
    minute = np.asarray(index.hour * 60 + index.minute) - (9 * 60 + 15)
    return np.clip(minute * buckets // 375, 0, buckets - 1)


def seasonal_task(
    drifts: tuple[float, ...], n: int = 12_000, seed: int = 0
) -> tuple[TaskArrays, np.ndarray]:
    """Returns drift by time of day (``drifts[b]`` per bar starting in bucket b of the
    session's ``len(drifts)`` equal slices) plus noise; the oracle holds the sign of the
    drift of the next bar (known from the schedule)."""
    rng = np.random.default_rng(seed)
    index = session_timestamps(n, 5)
    d = np.asarray(drifts)
    r = d[_bucket_of_start(index, len(d))] + rng.standard_normal(n) * SIGMA
    a = _arrays(f"Season{seed}", bars_from_returns(r))
    local = pd.DatetimeIndex(a.timestamps.view("M8[ns]")).tz_localize("UTC").tz_convert(index.tz)
    oracle = np.zeros(len(a), dtype=np.int8)
    oracle[:-1] = np.sign(d[_bucket_of_start(local[1:], len(d))])
    return a, oracle
