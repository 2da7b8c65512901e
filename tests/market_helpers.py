"""Synthetic TaskArrays for the market tests (the envs must not care what features are)."""

from __future__ import annotations

import numpy as np

from instrument_helpers import synthetic_market
from metatrade.data.task_arrays import TaskArrays, TaskId


def make_task_arrays(
    n: int = 400,
    n_features: int = 3,
    seed: int = 0,
    instrument: str = "Synth",
    timeframe: str = "5",
    bars_per_session: int = 75,
    start_price: float = 20_000.0,
) -> TaskArrays:
    """A random-walk price series with features that are plain noise, split 60/20/20."""
    rng = np.random.default_rng(seed)
    close = start_price * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    open_ = np.concatenate([[start_price], close[:-1]]) * np.exp(rng.normal(0.0, 0.0005, n))
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    features = rng.normal(size=(n, n_features)).astype(np.float32)
    session_end = (np.arange(n) % bars_per_session) == bars_per_session - 1
    minutes = int(timeframe)
    timestamps = (1_700_000_000 + 60 * minutes * np.arange(n, dtype=np.int64)) * 1_000_000_000
    a, b = int(0.6 * n), int(0.8 * n)
    return TaskArrays(
        task=TaskId(instrument, timeframe),
        timestamps=timestamps,
        open=open_,
        high=high,
        low=low,
        close=close,
        features=features,
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        session_end=session_end,
        bar_minutes=minutes,
        splits={"train": (0, a), "validation": (a, b), "test": (b, n)},
        market=synthetic_market(instrument, timeframe, bars_per_session * minutes),
    )
