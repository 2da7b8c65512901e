"""metatrade.runtime: the allocator setting really keeps big blocks in the process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from metatrade.runtime import configure_cpu

PROBE = """
import ctypes, ctypes.util, sys, torch
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    from metatrade.runtime import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
x = torch.ones(5_000_000)  # 20 MB
mmapped = libc.mallinfo2().hblkhd >> 20
del x
kept = libc.mallinfo2().fordblks >> 20
print(mmapped, kept)
"""


def _probe(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_keep_freed_memory_serves_big_blocks_from_the_heap_and_keeps_them() -> None:
    try:
        default = _probe("default")
    except subprocess.CalledProcessError:
        pytest.skip("no mallinfo2 (glibc < 2.33 or not glibc)")
    mmapped, kept = _probe("keep")
    assert default[0] >= 19 and default[1] < 5  # glibc default: mmap'd, returned on free
    assert mmapped < 10 and kept >= 19  # kept: from the heap, still held after free


def test_configure_cpu_sets_threads_and_leaves_them_when_zero() -> None:
    old = torch.get_num_threads()
    try:
        configure_cpu(threads=1, keep_memory=False)
        assert torch.get_num_threads() == 1
        configure_cpu(threads=0, keep_memory=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
