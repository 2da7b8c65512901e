"""On-disk cache of parsed bars and feature arrays, as uncompressed ``.npz`` files.

Key: the data file's resolved path + a hash of its bytes (blake2b) + whatever else the cached
value depends on (feature version, time zone, split config). A file edited in any way gets a
new key, even one whose size and modification time are the same as before (issue #18: such a
file used to be served stale), and the stale entry of the same file is deleted when the new
one is written. A file's hash is computed once per process for each (size, mtime, ctime,
inode) it has: hashing reads the file at disk speed (~1 GB/s), parsing is 100x slower. Writes go to a temporary
file in the same folder and are moved into place with ``os.replace`` (atomic on POSIX), so a
crash or a concurrent reader never sees half a file.

Layout: one folder per (kind, data file), ``<root>/<kind>-<stem>-<path digest>/<key>.npz``,
so dropping a file's stale entries lists that folder only (a flat folder made every write list
the whole cache: with the tens of thousands of entries that generated task sets leave, 14 ms
a write). The cache is bounded: after its first write a process evicts the least recently
used entries (a hit refreshes an entry's time) until the cache holds at most
``$METATRADE_CACHE_MAX_GB`` (default 4) GiB, and removes entries of the earlier flat layout.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path
from typing import IO

import numpy as np

from metatrade.io import atomic_write

CACHE_ENV = "METATRADE_CACHE"
MAX_SIZE_ENV = "METATRADE_CACHE_MAX_GB"
DEFAULT_MAX_GB = 4.0


def default_cache_dir() -> Path:
    """``$METATRADE_CACHE`` if set, else ``~/.cache/metatrade``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metatrade"


def max_cache_bytes() -> int:
    """``$METATRADE_CACHE_MAX_GB`` GiB (default 4); a clear error for a value that is not a
    non-negative number."""
    raw = os.environ.get(MAX_SIZE_ENV, str(DEFAULT_MAX_GB))
    try:
        gib = float(raw)
    except ValueError:
        gib = -1.0
    if not gib >= 0 or gib == float("inf"):
        raise ValueError(f"{MAX_SIZE_ENV}={raw!r}: give the cache's size limit in GiB, e.g. 4")
    return int(gib * 2**30)


def _digest(*parts: object, size: int = 16) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=size // 2).hexdigest()


_HASHES: dict[tuple[str, int, int, int, int], str] = {}  # (path, size, mtime, ctime, inode)
_PRUNED: set[Path] = set()  # cache roots this process has already bounded


def content_hash(path: Path) -> str:
    """blake2b of the file's bytes, memoised per process on its full ``stat`` (a write or an
    ``os.utime`` changes the ctime, so a memo is never stale)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _HASHES:
        with open(path, "rb") as f:
            _HASHES[key] = hashlib.file_digest(f, "blake2b").hexdigest()[:32]
    return _HASHES[key]


def prune(root: Path, max_bytes: int) -> int:
    """Delete the least recently used entries of ``root`` until at most ``max_bytes`` remain,
    and every file of the earlier flat layout; returns the bytes freed."""
    entries: list[tuple[float, int, Path]] = []
    freed = 0
    for item in os.scandir(root):
        if item.is_file(follow_symlinks=False) and item.name.endswith(".npz"):
            freed += item.stat().st_size  # the flat layout's entries are never read again
            Path(item.path).unlink(missing_ok=True)
        elif item.is_dir(follow_symlinks=False):
            for f in os.scandir(item.path):
                if f.name.endswith(".npz"):
                    st = f.stat()
                    entries.append((st.st_mtime, st.st_size, Path(f.path)))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        freed += size
    return freed


class DiskCache:
    """``load``/``save`` dicts of numpy arrays per (kind, data file, extra key)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def _folder(self, kind: str, path: Path) -> Path:
        return self.root / f"{kind}-{path.stem}-{_digest(str(path.resolve()), size=8)}"

    def _file(self, kind: str, path: Path, extra: tuple) -> Path:
        return self._folder(kind, path) / f"{_digest(content_hash(path), extra)}.npz"

    def load(self, kind: str, path: Path, extra: tuple = ()) -> dict[str, np.ndarray] | None:
        """The cached arrays, or None on a miss (or an unreadable entry)."""
        f = self._file(kind, path, extra)
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            warnings.warn(f"ignoring unreadable cache file {f}: {err}", stacklevel=2)
            return None
        with contextlib.suppress(OSError):  # a read-only cache is still a cache
            os.utime(f)  # recently used: the last to be evicted
        return arrays

    def save(self, kind: str, path: Path, extra: tuple, arrays: dict[str, np.ndarray]) -> None:
        """Write atomically; drop older entries of the same file; bound the cache's size once
        per process. Cache trouble only warns."""
        f = self._file(kind, path, extra)
        try:

            def write(fh: IO[bytes]) -> None:
                # numpy's stub types **kwds against savez's allow_pickle: bool keyword too
                np.savez(fh, **arrays)  # type: ignore[arg-type]

            atomic_write(f, write, binary=True, durable=False)
            for old in f.parent.glob("*.npz"):
                if old != f:
                    old.unlink(missing_ok=True)
            if self.root not in _PRUNED:
                _PRUNED.add(self.root)
                prune(self.root, max_cache_bytes())
        except OSError as err:
            warnings.warn(f"could not write cache file {f}: {err}", stacklevel=2)
