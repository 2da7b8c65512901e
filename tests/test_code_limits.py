"""The size limits of the house style, held on ``src/`` with ``ast``: no module over 400
lines, no function over 60 (a function's lines run from its ``def`` to its last line,
docstring included; decorators are not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def long_modules(root: Path, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """Modules under ``root`` (paths relative to it) longer than ``limit`` lines."""
    sizes = {p.relative_to(root).as_posix(): len(p.read_text().splitlines()) for p in _py(root)}
    return {name: n for name, n in sizes.items() if n > limit}


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> dict[tuple[str, str], int]:
    """(module, function) -> lines of every function or method under ``root`` over ``limit``."""
    out = {}
    for path in _py(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    out[(path.relative_to(root).as_posix(), node.name)] = n
    return out


def _py(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def test_no_module_over_400_lines() -> None:
    over = long_modules(SRC)
    assert not over, f"split these modules (lines > {MAX_MODULE_LINES}): {over}"


def test_no_function_over_60_lines() -> None:
    over = long_functions(SRC)
    assert not over, f"split these functions (lines > {MAX_FUNCTION_LINES}): {over}"


@pytest.mark.parametrize(("body_lines", "flagged"), [(58, False), (59, True)])
def test_checks_count_a_function_from_def_to_last_line(
    tmp_path: Path, body_lines: int, flagged: bool
) -> None:
    """A def line, a docstring and ``body_lines`` statements: 60 lines pass, 61 do not; the
    module around it is flagged once it passes 400 lines."""
    body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
    code = 'def f() -> None:\n    """Doc."""\n' + body + "\n" * 340
    (tmp_path / "m.py").write_text(code)
    assert (("m.py", "f") in long_functions(tmp_path)) is flagged
    assert ("m.py" in long_modules(tmp_path)) is flagged


_FMT_MARKERS = ("# fmt: " + "skip", "# fmt: " + "off")  # split: this file holds neither


def formatter_escapes(repo: Path) -> set[str]:
    """Files under src/, tests/ and benchmarks/ that switch ``ruff format`` off somewhere."""
    found = set()
    for folder in ("src", "tests", "benchmarks"):
        for path in _py(repo / folder):
            if any(m in path.read_text() for m in _FMT_MARKERS):
                found.add(path.relative_to(repo).as_posix())
    return found


def test_ruff_format_lays_out_every_line() -> None:
    """No formatter escape (fmt skip / off comments): a table that reads badly once formatted
    is restructured instead (a list per line, a dict)."""
    found = formatter_escapes(SRC.parent)
    assert not found, f"remove the formatter escapes in {sorted(found)}"
