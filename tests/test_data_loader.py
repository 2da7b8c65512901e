"""DataLoader on the embedded sample and on the real raw CSVs (a couple of tasks each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metatrade.data import DataLoader, HeldOut, TaskId
from metatrade.data.features import FEATURE_NAMES

REAL = Path("/work/shared/data/ohlcv")


@pytest.fixture(scope="module")
def sample_loader(tmp_path_factory) -> DataLoader:
    return DataLoader(cache_dir=tmp_path_factory.mktemp("cache"))


def test_embedded_sample_has_all_36_tasks(sample_loader: DataLoader) -> None:
    tasks = sample_loader.get_available_tasks()
    assert len(tasks) == 36
    assert {t.instrument for t in tasks} == {"Bank_Nifty", "Finnifty", "Nifty"}
    assert all(isinstance(t, TaskId) for t in tasks)
    assert TaskId("Bank_Nifty", "5") in tasks


def test_get_task_data_is_clean(sample_loader: DataLoader) -> None:
    df = sample_loader.get_task_data("Nifty", "60")
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert str(df.index.tz) == "Asia/Kolkata"
    assert df.index.is_monotonic_increasing and df.index.is_unique
    assert df.index[0] == pd.Timestamp("2024-03-18 09:15", tz="Asia/Kolkata")
    assert df.index[-1].date() == pd.Timestamp("2025-04-17").date()


def test_task_arrays_contract(sample_loader: DataLoader) -> None:
    a = sample_loader.get_task_arrays("Finnifty", "30")
    n = len(a)
    assert a.features.shape == (n, len(FEATURE_NAMES)) and a.features.dtype == np.float32
    assert np.isfinite(a.features).all()
    assert a.timestamps.dtype == np.int64 and np.all(np.diff(a.timestamps) > 0)
    assert a.session_end[-1] and a.session_end.dtype == bool
    (t0, t1), (v0, v1), (s0, s1) = a.splits["train"], a.splits["validation"], a.splits["test"]
    assert t0 == 0 and t1 <= v0 <= v1 <= s0 <= s1 == n
    # train statistics: z-scored features have ~zero mean on the train split
    assert np.abs(a.features[t0:t1].mean(axis=0)).max() < 0.2
    assert sample_loader.get_task_arrays("Finnifty", "30") is a  # memory cache


@pytest.mark.skipif(not REAL.is_dir(), reason="real data folder not present")
def test_real_raw_csv_matches_embedded(sample_loader: DataLoader, tmp_path: Path) -> None:
    real = DataLoader(REAL, cache_dir=False)
    assert len(real.get_available_tasks()) == 36
    for task in [("Bank_Nifty", "240"), ("Nifty", "45")]:
        raw = real.get_task_data(*task)
        emb = sample_loader.get_task_data(*task)
        pd.testing.assert_frame_equal(raw, emb, check_freq=False)
        raw_csv = pd.read_csv(real.task_path(*task), index_col=0)
        assert len(raw) == raw_csv.drop_duplicates().shape[0] < len(raw_csv)


def test_heldout_pools(sample_loader: DataLoader) -> None:
    loader = DataLoader(
        cache_dir=False, heldout=HeldOut(instruments=("Finnifty",), timeframes=("45",))
    )
    train, test = loader.tasks("train"), loader.tasks("test")
    assert set(train).isdisjoint(test) and len(train) + len(test) == 36
    assert all(t.instrument != "Finnifty" and t.timeframe != "45" for t in train)
    assert len(test) == 12 + 2
