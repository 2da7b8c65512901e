"""``mypy`` (configured in pyproject.toml's ``[tool.mypy]``) is clean on ``src/``: the package
ships ``py.typed``, so its annotations are a promise to its users. ``make lint`` runs the same
check; this test puts it in ``make test`` (what CI runs)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_ERROR = re.compile(r"^(?P<file>[^:\n]+\.py):\d+: error: ", re.MULTILINE)


def mypy_errors() -> Counter[str]:
    """Error count per file of ``mypy`` run as ``make lint`` runs it (its cache in .mypy_cache)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "src"], cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode not in (0, 1) or "error: " not in proc.stdout and proc.returncode:
        raise RuntimeError(f"mypy did not run: {proc.stdout}{proc.stderr}")
    return Counter(m["file"] for m in _ERROR.finditer(proc.stdout))


def test_mypy_is_clean_on_src() -> None:
    errors = mypy_errors()
    assert not errors, f"mypy errors (run `mypy src`): {dict(errors)}"
