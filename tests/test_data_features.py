"""Features: causal (no look-ahead, exactly), instrument-agnostic, warm-up dropped, train-split stats."""

from __future__ import annotations

import numpy as np
import pytest

from metatrade.data import DataLoader, SplitConfig, TaskId, build_task_arrays, raw_features
from metatrade.data.calendar import assign_sessions
from metatrade.data.features import FEATURE_NAMES, warmup_rows
from metatrade.data.instruments import InstrumentRegistry
from metatrade.data.loader import SAMPLE_DIR

NIFTY = InstrumentRegistry(SAMPLE_DIR).get("Nifty")  # the embedded NSE description


@pytest.fixture(scope="module")
def bars():
    return DataLoader(cache_dir=False).get_task_data("Nifty", "15").iloc[:1500]


def _raw(df):
    ts = df.index.as_unit("ns").asi8
    sessions = assign_sessions(ts, NIFTY.calendar, NIFTY.timezone)
    return raw_features(
        *(df[k].to_numpy() for k in ("open", "high", "low", "close")),
        ts,
        bar_minutes=15,
        sessions=sessions,
    )


@pytest.mark.parametrize("t", [60, 400, 1499])
def test_raw_features_have_no_look_ahead(bars, t: int) -> None:
    base = _raw(bars)
    perturbed = bars.copy()
    rng = np.random.default_rng(t)
    scale = np.exp(rng.normal(0, 0.05, size=len(bars) - t - 1))[:, None]
    perturbed.iloc[t + 1 :, :4] = perturbed.iloc[t + 1 :, :4].to_numpy() * scale
    after = _raw(perturbed)
    np.testing.assert_array_equal(base[: t + 1], after[: t + 1])  # exact, NaNs included
    if t + 1 < len(bars):
        assert not np.allclose(base[t + 1 :], after[t + 1 :], equal_nan=True)


def test_task_arrays_no_look_ahead_after_train_split(bars) -> None:
    cfg = SplitConfig(0.6, 0.2, 0.2)
    task = TaskId("Nifty", "15")
    base = build_task_arrays(task, bars, splits=cfg, instrument=NIFTY)
    t = base.splits["validation"][0] + 40  # normalisation stats come from train rows only
    perturbed = bars.copy()
    row = len(bars) - len(base) + t  # warm-up rows shift the index
    perturbed.iloc[row + 1 :, :4] *= 1.3
    after = build_task_arrays(task, perturbed, splits=cfg, instrument=NIFTY)
    np.testing.assert_array_equal(base.features[: t + 1], after.features[: t + 1])
    assert not np.array_equal(base.features[t + 1 :], after.features[t + 1 :])


def test_instrument_agnostic_price_scale_invariance(bars) -> None:
    a = build_task_arrays(TaskId("A", "15"), bars, splits=SplitConfig(), instrument=NIFTY)
    scaled = bars.copy()
    scaled.iloc[:, :4] *= 2.3  # a different price level, same returns
    b = build_task_arrays(TaskId("B", "15"), scaled, splits=SplitConfig(), instrument=NIFTY)
    np.testing.assert_allclose(a.features, b.features, atol=2e-4)


def test_warmup_dropped_not_zero_filled(bars) -> None:
    raw = _raw(bars)
    w = warmup_rows(raw)
    assert 0 < w < 100 and np.isfinite(raw[w:]).all() and not np.isfinite(raw[w - 1]).all()
    arrays = build_task_arrays(TaskId("Nifty", "15"), bars, splits=SplitConfig(), instrument=NIFTY)
    assert len(arrays) == len(bars) - w
    assert arrays.timestamps[0] == bars.index.as_unit("ns").asi8[w]
    assert np.array_equal(arrays.close, bars["close"].to_numpy()[w:])


def test_normalised_with_train_stats_and_no_levels(bars) -> None:
    arrays = build_task_arrays(TaskId("Nifty", "15"), bars, splits=SplitConfig(), instrument=NIFTY)
    a, b = arrays.splits["train"]
    f = arrays.features[a:b].astype(np.float64)
    clipped = np.abs(f).max(axis=0) >= 10.0
    assert np.allclose(f.mean(axis=0)[~clipped], 0.0, atol=1e-4)
    assert arrays.feature_names == FEATURE_NAMES
    assert not any(name in FEATURE_NAMES for name in ("open", "high", "low", "close", "volume"))


def test_session_features(bars) -> None:
    raw = _raw(bars)
    since = raw[:, FEATURE_NAMES.index("minutes_since_open")]
    to_close = raw[:, FEATURE_NAMES.index("minutes_to_close")]
    first = bars.index.strftime("%H:%M") == "09:15"
    assert np.all(since[first] == 0.0)
    assert np.allclose(since + to_close, 1.0 - 15 / 375)
