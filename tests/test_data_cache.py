"""On-disk cache: a warm hit skips parsing, a changed file invalidates, writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metatrade.data import DataLoader, SplitConfig, write_synthetic_tasks
from metatrade.data.cache import CACHE_ENV, DiskCache, default_cache_dir


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_synthetic_tasks(tmp_path / "data", 2, seed=0, n_bars=600, fmt="csv")
    return tmp_path / "data"


def _entries(cache: Path) -> list[str]:
    return sorted(p.name.split("-")[0] for p in cache.glob("*.npz"))


def test_warm_hit_returns_identical_arrays(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    task = DataLoader(folder, cache_dir=cache).get_available_tasks()[0]
    cold = DataLoader(folder, cache_dir=cache).get_task_arrays(*task)
    assert set(_entries(cache)) == {"arrays", "bars"}  # (the task list reads every file's bars)
    assert not list(cache.glob(".tmp-*"))  # temp files moved into place
    warm = DataLoader(folder, cache_dir=cache).get_task_arrays(*task)
    for name in ("timestamps", "open", "high", "low", "close", "features", "session_end"):
        np.testing.assert_array_equal(getattr(cold, name), getattr(warm, name))
    assert warm.splits == cold.splits and warm.feature_names == cold.feature_names
    assert warm.bar_minutes == cold.bar_minutes
    bars = DataLoader(folder, cache_dir=cache).get_task_data(*task)
    assert bars.equals(DataLoader(folder, cache_dir=False).get_task_data(*task))


def test_an_edit_keeping_size_and_mtime_is_not_served_stale(folder: Path, tmp_path: Path) -> None:
    """Reproduction: the cache was keyed on size and mtime only, so a file edited in place
    with its size and mtime kept (a copy tool, a fixed-width correction, a restored mtime)
    was served from the cache with its old prices. Now the key is a hash of the bytes."""
    cache = tmp_path / "cache"
    loader = DataLoader(folder, cache_dir=cache)
    task = loader.get_available_tasks()[0]
    before = loader.get_task_arrays(*task).close.copy()
    path = loader.task_path(*task)
    st = path.stat()
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1].split(",")
    close_col = text.split("\n", 1)[0].split(",").index("close")
    edited = last.copy()
    edited[close_col] = last[close_col][:-1] + ("1" if last[close_col][-1] != "1" else "2")
    path.write_text(text.replace(",".join(last), ",".join(edited)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    after = DataLoader(folder, cache_dir=cache).get_task_arrays(*task).close
    assert after[:-1].tolist() == before[:-1].tolist()
    assert after[-1] != before[-1]
    assert after[-1] == DataLoader(folder, cache_dir=False).get_task_arrays(*task).close[-1]


def test_changed_file_invalidates(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    loader = DataLoader(folder, cache_dir=cache)
    task = loader.get_available_tasks()[0]
    before = loader.get_task_data(*task)
    path = loader.task_path(*task)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-100]) + "\n")  # drop the last 100 bars
    after = DataLoader(folder, cache_dir=cache).get_task_data(*task)
    assert len(after) == len(before) - 100
    assert len(list(cache.glob(f"bars-{path.stem}-*.npz"))) == 1  # stale entry removed


def test_split_config_is_part_of_the_key(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    task = DataLoader(folder, cache_dir=cache).get_available_tasks()[0]
    a = DataLoader(folder, cache_dir=cache).get_task_arrays(*task)
    b = DataLoader(folder, cache_dir=cache, splits=SplitConfig(0.5, 0.25, 0.25)).get_task_arrays(
        *task
    )
    assert a.splits != b.splits


def test_default_dir_from_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert DiskCache().root == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "metatrade"
