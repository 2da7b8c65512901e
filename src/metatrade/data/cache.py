"""On-disk cache of parsed bars and feature arrays, as uncompressed ``.npz`` files.

Key: the data file's resolved path + a hash of its bytes (blake2b) + whatever else the cached
value depends on (feature version, time zone, split config). A file edited in any way gets a
new key, even one whose size and modification time are the same as before (issue #18: such a
file used to be served stale), and the stale entry of the same file is deleted when the new
one is written. A file's hash is computed once per process for each (size, mtime, ctime,
inode) it has: hashing reads the file at disk speed (~1 GB/s), parsing is 100x slower. Writes go to a temporary
file in the same folder and are moved into place with ``os.replace`` (atomic on POSIX), so a
crash or a concurrent reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from metatrade.io import atomic_write

CACHE_ENV = "METATRADE_CACHE"


def default_cache_dir() -> Path:
    """``$METATRADE_CACHE`` if set, else ``~/.cache/metatrade``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metatrade"


def _digest(*parts: object, size: int = 16) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=size // 2).hexdigest()


_HASHES: dict[tuple[str, int, int, int, int], str] = {}  # (path, size, mtime, ctime, inode)


def content_hash(path: Path) -> str:
    """blake2b of the file's bytes, memoised per process on its full ``stat`` (a write or an
    ``os.utime`` changes the ctime, so a memo is never stale)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _HASHES:
        with open(path, "rb") as f:
            _HASHES[key] = hashlib.file_digest(f, "blake2b").hexdigest()[:32]
    return _HASHES[key]


class DiskCache:
    """``load``/``save`` dicts of numpy arrays per (kind, data file, extra key)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def _prefix(self, kind: str, path: Path) -> str:
        return f"{kind}-{path.stem}-{_digest(str(path.resolve()), size=8)}"

    def _file(self, kind: str, path: Path, extra: tuple) -> Path:
        state = _digest(content_hash(path), extra)
        return self.root / f"{self._prefix(kind, path)}-{state}.npz"

    def load(self, kind: str, path: Path, extra: tuple = ()) -> dict[str, np.ndarray] | None:
        """The cached arrays, or None on a miss (or an unreadable entry)."""
        f = self._file(kind, path, extra)
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            warnings.warn(f"ignoring unreadable cache file {f}: {err}", stacklevel=2)
            return None

    def save(self, kind: str, path: Path, extra: tuple, arrays: dict[str, np.ndarray]) -> None:
        """Write atomically; drop older entries of the same file. Cache trouble only warns."""
        f = self._file(kind, path, extra)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # numpy's stub types **kwds against savez's allow_pickle: bool keyword too
            atomic_write(f, lambda fh: np.savez(fh, **arrays), binary=True)  # type: ignore[arg-type]
            for old in self.root.glob(f"{self._prefix(kind, path)}-*.npz"):
                if old != f:
                    old.unlink(missing_ok=True)
        except OSError as err:
            warnings.warn(f"could not write cache file {f}: {err}", stacklevel=2)
