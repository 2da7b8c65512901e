"""Atomic file writes, for every layer: checkpoints, caches, configs, reports and plots.

A run interrupted mid-write must never leave a half-written CSV or PNG that a later reader
takes for a result: write to a temporary file in the same directory, then ``os.replace``
(atomic on POSIX and Windows when both paths are on one file system).

A run directory has one writer at a time: ``run_dir_lock`` holds an OS lock (``fcntl.flock``)
on ``<run_dir>/.lock`` (which records the holder's pid) for as long as a command writes the
directory, and on taking it deletes the temporary files an interrupted atomic write left.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

try:  # POSIX; on Windows run directories are not locked (documented in docs/configuration.md)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"  # what atomic_write's temporary files look like
# mkstemp(prefix=".<name>.", suffix=".tmp") names: 8 random characters from [a-z0-9_]
_STRAY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
_held: dict[Path, list[int]] = {}  # run dir -> [lock file descriptor, nesting depth]


class RunDirError(OSError):
    """A run directory is being written by another process, or holds a run that a command
    would replace without being asked to (``--resume`` / ``--overwrite``)."""


def _umask() -> int:
    """The process umask (read by setting it and putting it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | Path, write: Callable[[IO[Any]], object], *, binary: bool, durable: bool = True
) -> Path:
    """Call ``write(fileobj)`` (its return value unused) on a temporary sibling of ``path``,
    then move it into place. ``durable``: fsync before the move (a run's files); a cache,
    which a crash only costs a recomputation, skips it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{_TMP_PREFIX}{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent
    )
    # mkstemp creates the file 0600; give the result the mode a plain open() would (0666 & ~umask)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), binary=True)


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` through a temporary file (format from the suffix of ``path``)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **kwargs), binary=True)


@contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if missing) while the body writes it.

    Re-entrant within a process (the CLI and the Trainer it calls both take it). Another
    process holding it is a ``RunDirError`` naming its pid and the directory: two commands
    writing one run would interleave its log and leave a config that does not match its
    checkpoint. Taking the lock first deletes stray ``.*.tmp`` files of interrupted writes.
    A directory the lock created and nothing else wrote (a command refused before writing)
    is removed again on release, so a refusal leaves no trace.
    """
    path = Path(run_dir)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    key = path.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield path
        finally:
            _held[key][1] -= 1
        return
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunDirError(
                    f"run directory {path} is being written by another metatrade process "
                    f"(pid {holder}, lock {key / LOCK_NAME}); wait for it to finish, stop it, "
                    "or write this run elsewhere with --out"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        clean_stale_tmp(key)
        _held[key] = [fd, 1]
        try:
            yield path
        finally:
            del _held[key]
            os.ftruncate(fd, 0)
            if created:
                _remove_if_only_the_lock(key)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _remove_if_only_the_lock(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing but the lock file (while the lock is held)."""
    try:
        if [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()
            folder.rmdir()
    except OSError:  # something appeared meanwhile, or it is not ours to remove: keep it
        pass


@contextmanager
def interrupts_deferred(notice: str, deliver: bool = True) -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) while the body writes a file that must not be cut short: each
    press only prints ``notice`` (once); after the body, one held interrupt is delivered to
    the handler that was in place (``deliver``), or dropped. In threads other than the main
    one (where signals cannot be handled) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if not held:
            print(notice, file=sys.stderr, flush=True)
        held.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held and deliver:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def clean_stale_tmp(run_dir: str | Path, max_depth: int = 3) -> list[Path]:
    """Delete the temporary files (``.<name>.<8 random chars>.tmp``) that atomic writes
    interrupted by a kill left in ``run_dir`` and its sub-folders up to ``max_depth`` deep
    (``reports/<task>/<method>/`` is the deepest a run writes); returns them. Call it only
    while holding the directory's lock. Hidden folders are not entered, and a sub-folder
    with its own lock file is another run (e.g. ``ppo/``) that may be writing right now: it
    is cleaned when it is locked."""
    root = Path(run_dir)
    removed = []
    for folder, subdirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        subdirs[:] = [
            d
            for d in subdirs
            if depth < max_depth and not d.startswith(".") and not (here / d / LOCK_NAME).exists()
        ]
        for name in files:
            if _STRAY.fullmatch(name):
                (here / name).unlink(missing_ok=True)
                removed.append(here / name)
    return removed


def json_safe(obj: Any) -> Any:
    """A copy ``json.dumps`` writes as strict JSON: non-finite floats become None (``null``,
    not the ``NaN`` / ``Infinity`` other readers reject), numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
