"""Chronological splits (no overlap, embargo), held-out isolation, balanced reproducible sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from metatrade.data import DataLoader, HeldOut, SplitConfig, TaskId
from metatrade.data.sampling import balanced_sample

TS = pd.date_range("2024-01-01", periods=1000, freq="h", tz="UTC").as_unit("ns").asi8


@pytest.mark.parametrize("embargo", [0, 7])
def test_fraction_splits_are_disjoint_ordered_with_embargo(embargo: int) -> None:
    r = SplitConfig(0.6, 0.2, 0.2, embargo_bars=embargo).ranges(TS)
    (t0, t1), (v0, v1), (s0, s1) = r["train"], r["validation"], r["test"]
    assert t0 == 0 and s1 == len(TS)
    assert v0 - t1 == embargo and s0 - v1 == embargo
    assert t1 < v0 <= v1 < s0 or embargo == 0
    rows = [set(range(a, b)) for a, b in r.values()]
    assert all(x.isdisjoint(y) for i, x in enumerate(rows) for y in rows[i + 1 :])
    assert t1 - t0 == int((len(TS) - 2 * embargo) * 0.6)


def test_date_splits() -> None:
    r = SplitConfig(train_end="2024-01-20", validation_end="2024-02-01", embargo_bars=3).ranges(
        TS, tz="UTC"
    )
    t1 = r["train"][1]
    assert pd.Timestamp(TS[t1 - 1], tz="UTC") < pd.Timestamp("2024-01-20", tz="UTC")
    assert pd.Timestamp(TS[t1], tz="UTC") == pd.Timestamp("2024-01-20", tz="UTC")
    assert r["validation"][0] == t1 + 3
    assert pd.Timestamp(TS[r["validation"][1]], tz="UTC") == pd.Timestamp("2024-02-01", tz="UTC")
    assert r["test"] == (r["validation"][1] + 3, len(TS))


def test_bad_split_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(0.5, 0.1, 0.1)
    with pytest.raises(ValueError, match="before"):
        SplitConfig(train_end="2024-02-01", validation_end="2024-01-01")


@pytest.fixture(scope="module")
def loader() -> DataLoader:
    return DataLoader(
        cache_dir=False,
        heldout=HeldOut(instruments=("Finnifty",), timeframes=("45",), tasks=(("Nifty", "2"),)),
    )


def test_heldout_never_sampled_for_training(loader: DataLoader) -> None:
    test_pool = set(loader.tasks("test"))
    assert test_pool == {t for t in loader.get_available_tasks() if t.instrument == "Finnifty"} | {
        TaskId("Nifty", "45"),
        TaskId("Bank_Nifty", "45"),
        TaskId("Nifty", "2"),
    }
    rng = np.random.default_rng(0)
    seen = {t for _ in range(50) for t in loader.sample_tasks(8, rng=rng)}
    assert seen.isdisjoint(test_pool) and seen == set(loader.tasks("train"))
    assert set(loader.sample_tasks(100, rng=1, task_set="test")) == test_pool


def test_sampling_without_heldout_refuses_test_split() -> None:
    with pytest.raises(ValueError, match="HeldOut"):
        DataLoader(cache_dir=False).sample_tasks(2, rng=0, task_set="test")


def test_sampling_is_balanced_without_repeats() -> None:
    pool = DataLoader(cache_dir=False).get_available_tasks()  # 3 instruments x 12 timeframes
    for n in range(1, 37):
        batch = balanced_sample(pool, n, np.random.default_rng(n))
        assert len(set(batch)) == n  # no repeats while n <= pool
        inst = Counter(t.instrument for t in batch)
        assert max(inst.values()) - min(inst.values()) <= 1 and len(inst) == min(n, 3)
        tf = Counter(t.timeframe for t in batch)
        assert max(tf.values()) - min(tf.values()) <= 1 and len(tf) == min(n, 12)
    over = balanced_sample(pool, 80, 0)
    assert set(Counter(over).values()) <= {2, 3}


def test_sampling_reproducible_for_seed(loader: DataLoader) -> None:
    assert loader.sample_tasks(7, rng=42) == loader.sample_tasks(7, rng=42)
    a = loader.sample_tasks(7, rng=np.random.default_rng(3))
    b = loader.sample_tasks(7, rng=np.random.default_rng(3))
    assert a == b
    draws = {tuple(loader.sample_tasks(5, rng=s)) for s in range(10)}
    assert len(draws) > 5  # different seeds, different batches
