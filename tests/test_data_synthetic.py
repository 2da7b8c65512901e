"""Synthetic AR(1) tasks: deterministic, gap-free, readable by the DataLoader, oracle beats zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metatrade.data import DataLoader, RegimeParams, oracle_positions, write_synthetic_tasks
from metatrade.data.synthetic import generate_bars, load_synthetic_params


def test_deterministic_for_seed(tmp_path: Path) -> None:
    a = write_synthetic_tasks(tmp_path / "a", 3, seed=7, n_bars=500)
    b = write_synthetic_tasks(tmp_path / "b", 3, seed=7, n_bars=500)
    assert a == b
    for f in (tmp_path / "a").glob("*.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(f), pd.read_parquet(tmp_path / "b" / f.name))
    c = write_synthetic_tasks(tmp_path / "c", 3, seed=8, n_bars=500)
    assert c != a


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_read_back_through_loader(tmp_path: Path, fmt: str) -> None:
    tasks = write_synthetic_tasks(tmp_path, 4, seed=1, n_bars=800, timeframes=("5", "45"), fmt=fmt)
    loader = DataLoader(tmp_path, cache_dir=False)
    assert sorted(loader.get_available_tasks()) == sorted(tasks)
    assert load_synthetic_params(tmp_path) == tasks
    for task, params in tasks.items():
        assert task.instrument.endswith(f"{round(abs(params.phi) * 100):03d}")
        df = loader.get_task_data(*task)
        assert np.array_equal(df["open"].to_numpy()[1:], df["close"].to_numpy()[:-1])  # no gaps
        assert 5_000 < df["close"].iloc[0] < 50_000
        local = df.index.tz_convert("Asia/Kolkata")
        minutes = local.hour * 60 + local.minute
        assert minutes.min() == 9 * 60 + 15 and minutes.max() < 15 * 60 + 30
        assert local.day_of_week.max() <= 4
        assert len(loader.get_task_arrays(*task)) > 0


def test_ar1_statistics() -> None:
    params = RegimeParams(phi=0.4, sigma=1e-3, drift=2e-5)
    close = generate_bars(params, 20_000, 0)["close"].to_numpy()
    r = np.diff(np.log(close))
    assert abs(np.corrcoef(r[:-1], r[1:])[0, 1] - 0.4) < 0.03
    assert abs(r.std() * np.sqrt(1 - 0.4**2) - 1e-3) < 5e-5


@pytest.mark.parametrize("phi", [0.3, -0.3])
def test_oracle_earns_positive_expected_return(phi: float) -> None:
    params = RegimeParams(phi=phi, sigma=1e-3)
    bars = generate_bars(params, 10_000, np.random.default_rng(3))
    close = bars["close"].to_numpy()
    pos = oracle_positions(close, params)
    assert pos.dtype == np.int8 and set(np.unique(pos)) <= {-1, 0, 1}
    # position decided at bar t, filled at open[t+1] == close[t], earns r_{t+1}
    earned = pos[:-1] * np.diff(np.log(close))
    assert earned.mean() > 5 * earned.std() / np.sqrt(len(earned))
    # theory: E|phi * r_t| = |phi| * sigma_r * sqrt(2/pi)
    sigma_r = params.sigma / np.sqrt(1 - phi**2)
    assert earned.mean() == pytest.approx(abs(phi) * sigma_r * np.sqrt(2 / np.pi), rel=0.15)
    flipped = -pos[:-1] * np.diff(np.log(close))
    assert flipped.mean() < 0


def test_oracle_threshold_trades_less() -> None:
    params = RegimeParams(phi=0.2, sigma=1e-3)
    close = generate_bars(params, 3_000, 1)["close"].to_numpy()
    assert (oracle_positions(close, params, threshold=2e-4) == 0).sum() > (
        oracle_positions(close, params) == 0
    ).sum()


def test_bad_params_refused() -> None:
    with pytest.raises(ValueError, match="phi"):
        RegimeParams(phi=1.2)
