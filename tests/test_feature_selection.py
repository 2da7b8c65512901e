"""``env.features``: columns selected by name, computed once, the same values in every path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metatrade.data import DataLoader, SplitConfig, TaskId, build_task_arrays
from metatrade.data.calendar import assign_sessions
from metatrade.data.features import (
    FEATURE_NAMES,
    RETURN_LAGS,
    VOL_SCALE_BARS,
    all_raw_features,
    available_features,
    check_feature_names,
    normalise,
    raw_features,
    warmup_rows,
)
from metatrade.exact import build_windows
from metatrade.market import BatchTradingEnv, TradingEnv, TradingEnvConfig

PICK = ("ret_1_lag0", "logret_1", "ret_1_lag3", "minutes_since_open")


NIFTY = DataLoader(cache_dir=False).instrument("Nifty")


@pytest.fixture(scope="module")
def bars():
    return DataLoader(cache_dir=False).get_task_data("Nifty", "15").iloc[:2000]


def _sessions(ts: np.ndarray):
    return assign_sessions(np.asarray(ts), NIFTY.calendar, NIFTY.timezone)


def test_the_standard_arrays_are_bitwise_what_they_were(bars) -> None:
    """Computing every feature and selecting the standard ones gives the arrays of the
    standard pipeline alone (warm-up, z-score and clip are per column)."""
    arrays = build_task_arrays(TaskId("Nifty", "15"), bars, splits=SplitConfig(), instrument=NIFTY)
    ts = bars.index.as_unit("ns").asi8
    ohlc = (bars[k].to_numpy() for k in ("open", "high", "low", "close"))
    raw = raw_features(*ohlc, ts, bar_minutes=15, sessions=_sessions(ts))
    raw = raw[warmup_rows(raw) :]
    z, _, _ = normalise(raw, arrays.splits["train"])
    assert arrays.feature_names == FEATURE_NAMES
    assert arrays.features.tobytes() == z.tobytes()


def test_lagged_returns_are_past_returns_in_units_of_causal_volatility(bars) -> None:
    ts = bars.index.as_unit("ns").asi8
    o, h, lo, c = (bars[k].to_numpy() for k in ("open", "high", "low", "close"))
    every = all_raw_features(o, h, lo, c, ts, bar_minutes=15, sessions=_sessions(ts))
    names = available_features()
    r = np.diff(np.log(c), prepend=np.nan)
    t = 500
    sigma = np.std(r[t - VOL_SCALE_BARS + 1 : t + 1])
    for lag in range(RETURN_LAGS):
        got = every[t, names.index(f"ret_1_lag{lag}")]
        assert got == pytest.approx(r[t - lag] / sigma, rel=1e-9)
    # causal: changing bars after t changes nothing at or before t
    later = c.copy()
    later[t + 1 :] *= 1.05
    moved = all_raw_features(o, h, lo, later, ts, bar_minutes=15, sessions=_sessions(ts))
    np.testing.assert_array_equal(every[: t + 1], moved[: t + 1])
    assert warmup_rows(every) == warmup_rows(every[:, : len(FEATURE_NAMES)])


def test_unknown_feature_names_are_refused_with_close_matches() -> None:
    with pytest.raises(ValueError, match=r"^unknown feature 'logret1'; did you mean logret_1"):
        check_feature_names(["logret1"])
    with pytest.raises(ValueError, match="repeated"):
        check_feature_names(["logret_1", "logret_1"])
    with pytest.raises(ValueError, match="no feature 'ret_1_lag0' in its arrays"):
        DataLoader(cache_dir=False).get_task_arrays("Nifty", "60").select_features(["ret_1_lag0"])
    with pytest.raises(ValueError, match="DataLoader features: unknown feature 'rsi'"):
        DataLoader(cache_dir=False, features=["rsi"])


def test_one_cache_entry_serves_every_selection(tmp_path: Path) -> None:
    """Every feature is computed and cached once; loaders of different selections read the
    same entry and get the same values for the columns they share."""
    cache = tmp_path / "cache"
    standard = DataLoader(cache_dir=cache).get_task_arrays("Finnifty", "60")
    entries = sorted(cache.glob("arrays-*/*.npz"))
    picked = DataLoader(cache_dir=cache, features=PICK).get_task_arrays("Finnifty", "60")
    assert sorted(cache.glob("arrays-*/*.npz")) == entries  # a hit, not a second entry
    assert picked.feature_names == PICK and picked.features.shape == (len(standard), len(PICK))
    for name in ("logret_1", "minutes_since_open"):
        i, j = PICK.index(name), FEATURE_NAMES.index(name)
        np.testing.assert_array_equal(picked.features[:, i], standard.features[:, j])
    cold = DataLoader(cache_dir=False, features=PICK).get_task_arrays("Finnifty", "60")
    np.testing.assert_array_equal(cold.features, picked.features)


def test_envs_and_windows_observe_the_selected_columns() -> None:
    """One TaskArrays with every feature; the config's selection reaches the single env,
    the batch env and the exact windows alike."""
    every = DataLoader(cache_dir=False, features=available_features()).get_task_arrays(
        "Nifty", "15"
    )
    cfg = TradingEnvConfig(lookback=3, episode_length=20, features=PICK, observation="position")
    cols = [every.feature_names.index(n) for n in PICK]
    want = every.features[:, cols]
    env = TradingEnv(every, cfg)
    obs, _ = env.reset(options={"start": 100})
    np.testing.assert_array_equal(obs[:-1], want[98:101].ravel())
    assert env.window_shape == (3, len(PICK))
    batch = BatchTradingEnv([every], 1, cfg)
    np.testing.assert_array_equal(batch.reset(starts=np.array([[100]]))[0, 0], obs)
    windows = build_windows([every], np.array([[100]]), window_bars=20, config=cfg)
    np.testing.assert_array_equal(windows.features[0, 0].numpy(), want[98:120])
    default = TradingEnv(every.select_features(FEATURE_NAMES), cfg.with_overrides(features=None))
    assert default.window_shape == (3, 22)
