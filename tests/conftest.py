"""Shared test set-up.

One intra-op thread per test process: the suite runs under pytest-xdist with one worker
per core, and torch's default of one thread per core makes the workers fight (about 10x
slower on the 2-core CI machine). The data cache goes to a per-session temp folder so
tests never write to the user's home.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("METATRADE_CACHE", str(tmp_path_factory.mktemp("metatrade-cache")))


@pytest.fixture(scope="session")
def tiny_meta_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `meta-train -c tiny -n 1` run directory per test process, for the command-line
    tests that only read a run (they write under their own --out, never into it)."""
    from typer.testing import CliRunner

    from metatrade.cli import app

    run = tmp_path_factory.mktemp("tiny-meta-run")
    res = CliRunner().invoke(
        app, ["meta-train", "-c", "tiny", "-n", "1", "--out", str(run), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    return run
