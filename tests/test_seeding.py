"""The one seed scheme (issue 22, item 3): ``derive_seed(run_seed, *labels)``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metatrade.seeding import SEED_BITS, derive_seed

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "metatrade"


def test_distinct_labels_give_distinct_seeds_in_range() -> None:
    names = [
        (0,),
        (1,),
        (0, "walkforward"),
        (0, "walkforward", "MAML", "EURUSD_1h", 0),
        (0, "walkforward", "MAML", "EURUSD_1h", 1),
        (0, "walkforward", "random", "EURUSD_1h", 0),
        (0, "ab", "c"),
        (0, "a", "bc"),
        (0, 1),
        (0, "1"),
        (0, "random start"),
        (-1, "random start"),
    ]
    seeds = [derive_seed(*n) for n in names]
    assert len(set(seeds)) == len(seeds), "two label tuples share a seed"
    assert all(0 <= s < 2**SEED_BITS for s in seeds)
    # every consumer accepts them
    for s in seeds:
        torch.Generator().manual_seed(s)
        np.random.default_rng(s)


def test_numpy_integers_are_the_same_labels_as_python_integers() -> None:
    assert derive_seed(np.int64(3), "task", np.int32(7)) == derive_seed(3, "task", 7)
    with pytest.raises(TypeError):
        derive_seed(0, 1.5)  # type: ignore[arg-type]


def test_derived_seeds_are_the_same_in_another_process() -> None:
    """A stable hash, not Python's salted ``hash``: a Ray worker or a resumed run derives the
    seeds the driver did."""
    code = (
        "from metatrade.seeding import derive_seed; print(derive_seed(42, 'protocol', 'MAML', 3))"
    )
    env = {"PYTHONPATH": str(SRC.parent), "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert int(out.stdout) == derive_seed(42, "protocol", "MAML", 3)


def test_no_literal_seed_offsets_or_ad_hoc_seed_hashes_in_the_package() -> None:
    """The acceptance grep of issue 22: every seed comes from ``derive_seed``, in the package
    and in the benchmarks (whose random and pretrained starts must be the CLI's)."""
    pattern = re.compile(
        r"seed ?\+ ?[0-9]|[0-9_]+ ?\+ ?[a-z_.]*seed|crc32|stream_seed|job_seed|seed \* |SeedSequence"
    )
    allowed = {
        "src/metatrade/data/regimes.py",  # the regime family's data, not a run's streams
    }
    files = [*SRC.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        if p.relative_to(ROOT).as_posix() not in allowed
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"seeds derived outside metatrade.seeding: {found}"
