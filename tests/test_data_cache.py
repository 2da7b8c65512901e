"""On-disk cache: a warm hit skips parsing, a changed file invalidates, writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metatrade.data import DataLoader, SplitConfig, write_synthetic_tasks
from metatrade.data import loader as loader_module
from metatrade.data.cache import (
    CACHE_ENV,
    MAX_SIZE_ENV,
    DiskCache,
    default_cache_dir,
    max_cache_bytes,
    prune,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_synthetic_tasks(tmp_path / "data", 2, seed=0, n_bars=600, fmt="csv")
    return tmp_path / "data"


def _entries(cache: Path) -> list[str]:
    return sorted(p.parent.name.split("-")[0] for p in cache.glob("*/*.npz"))


def test_warm_hit_returns_identical_arrays(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    task = DataLoader(folder, cache_dir=cache).get_available_tasks()[0]
    cold = DataLoader(folder, cache_dir=cache).get_task_arrays(*task)
    assert set(_entries(cache)) == {"arrays", "bars"}  # (the task list reads every file's bars)
    assert not list(cache.rglob("*.tmp"))  # temp files moved into place
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
    assert len(list(cache.glob(f"bars-{path.stem}-*/*.npz"))) == 1  # stale entry removed


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


def test_the_cache_is_bounded_evicting_the_least_recently_used(
    folder: Path, tmp_path: Path
) -> None:
    """Reproduction: every generated task set left its entries behind for good (9.7 GB and
    28,000 files on the shared machine), and each write listed the whole folder. Now a
    process bounds the cache after its first write, oldest use first."""
    cache = tmp_path / "cache"
    tasks = DataLoader(folder, cache_dir=cache).get_available_tasks()
    for task in tasks:
        DataLoader(folder, cache_dir=cache).get_task_arrays(*task)
    files = sorted(cache.glob("*/*.npz"))
    assert len(files) == 2 * len(tasks)  # bars and arrays of each task, a folder each
    for i, f in enumerate(files):
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    loader = DataLoader(folder, cache_dir=cache)
    loader.get_task_arrays(*tasks[0])  # a hit: used now
    stem = loader.task_path(*tasks[0]).stem
    used = [f for f in files if f.parent.name.startswith(f"arrays-{stem}-")]
    assert len(used) == 1
    legacy = cache / "bars-OLD-0123456789abcdef.npz"  # the flat layout of before
    legacy.write_bytes(b"x" * 10)
    sizes = {f: f.stat().st_size for f in files}
    freed = prune(cache, max_bytes=sizes[used[0]])
    assert sorted(cache.glob("*/*.npz")) == used and not legacy.exists()
    assert freed == sum(size for f, size in sizes.items() if f not in used) + 10


def test_cache_size_limit_from_env(monkeypatch) -> None:
    monkeypatch.setenv(MAX_SIZE_ENV, "0.5")
    assert max_cache_bytes() == 2**29
    monkeypatch.setenv(MAX_SIZE_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_SIZE_ENV):
        max_cache_bytes()


def test_a_read_only_cache_still_serves_hits(folder: Path, tmp_path: Path, monkeypatch) -> None:
    """Refreshing an entry's time on a hit (for the eviction order) must not turn a hit
    into a miss where the cache cannot be written (a shared, read-only cache)."""
    cache = tmp_path / "cache"
    task = DataLoader(folder, cache_dir=cache).get_available_tasks()[0]
    DataLoader(folder, cache_dir=cache).get_task_arrays(*task)  # fills the cache

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    def parse(*args, **kwargs):
        raise AssertionError("parsed: the cache did not serve its hit")

    monkeypatch.setattr(os, "utime", refuse)
    monkeypatch.setattr(loader_module, "load_bars", parse)
    warm = DataLoader(folder, cache_dir=cache).get_task_arrays(*task)
    assert len(warm.close) > 0
