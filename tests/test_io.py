"""Atomic writes: the file appears whole, with the permissions a plain open() would give."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from metatrade.io import atomic_write, atomic_write_text, json_safe


def test_atomic_write_text_content_and_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "report.json", "{}\n")
    finally:
        os.umask(mask)
    assert path.read_text() == "{}\n"
    if os.name == "posix":  # mkstemp alone would leave 0600: unreadable to the team
        assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "metrics.csv", "old\n")

    def fail(f: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail, binary=False)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_json_safe_is_strict_json() -> None:
    doc = {"sharpe": float("nan"), 3: [np.float32(0.5), float("inf"), (np.int64(2),)]}
    out = json_safe(doc)
    assert out == {"sharpe": None, "3": [0.5, None, [2]]}
    assert "NaN" not in json.dumps(out) and "Infinity" not in json.dumps(out)
