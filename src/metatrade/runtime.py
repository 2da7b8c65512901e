"""Process-wide CPU speed settings: torch intra-op threads and the C allocator.

Why the allocator: a meta-iteration allocates and frees activations of 10-20 MB dozens of
times (40,000 observations x 64 units). By default glibc serves blocks that large with
``mmap`` or trims them back to the OS on ``free``, so each new one page-faults in fresh,
zeroed pages. Keeping freed memory in the process (``mallopt``: mmap threshold 32 MiB, the
most glibc allows, and no trimming) turns those into reuses: on 2D navigation, 10 TRPO
iterations went from about 650,000 minor page faults to about 120,000 and each iteration
from about 1.55 s to 1.29 s (1 thread; ``docs/notes/meta-performance.md``). The cost: the process's
resident memory stays at its peak instead of shrinking after it.

Example::

    from metatrade.runtime import configure_cpu
    configure_cpu(threads=1)      # before training; what ``metatrade`` commands do
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's cap on 64-bit systems
_NO_TRIM = 2**31 - 1  # mallopt takes an int

_kept = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse instead of returning them to the OS.

    Returns True when applied (Linux with glibc), False where ``mallopt`` is missing or
    refuses (macOS, Windows, musl); calling it again is harmless.
    """
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _NO_TRIM) == 1 and ok
    _kept = ok
    return ok


def configure_cpu(threads: int | None = 1, keep_memory: bool = True) -> None:
    """Set torch's intra-op threads (None or 0: leave torch's default) and, if
    ``keep_memory``, apply ``keep_freed_memory``.

    One thread is the safe default: on a machine whose cores other jobs share, torch's
    OpenMP threads spin-wait for each other (2D navigation ran ~10x slower with 2 threads
    under load). On an otherwise idle machine, one thread per core is faster.
    """
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    if keep_memory:
        keep_freed_memory()


def resolve_device(name: str) -> str:
    """``run.device`` as a torch device: "cpu", "cuda", or "auto" (cuda when torch sees a
    GPU, else cpu). Asking for cuda without one is an error, not a silent fallback."""
    import torch

    if name not in ("cpu", "cuda", "auto"):
        raise ValueError(f"run.device={name!r}: use cpu, cuda or auto.")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "run.device: cuda, but torch sees no CUDA GPU (torch "
            f"{torch.__version__}); use run.device: cpu or auto."
        )
    return name
