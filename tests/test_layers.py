"""The import rules of docs/architecture.md, read from the source with ``ast``: each layer
imports only the layers above it in the table, function-level imports included (before
issue 22, ``market`` and ``exact`` imported each other through function-level imports)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "metatrade"
LAYERS = (
    "data",
    "market",
    "exact",
    "meta",
    "envs",
    "agents",
    "evaluation",
    "distributed",
    "training",
    "cli",
)
# The one upward import, named in docs/architecture.md: reading instruments.yaml, the data
# layer asks the market's cost presets whether a `costs` entry is valid, so the error names
# the file and the instrument (a function-level import; no market object is kept).
ALLOWED = {("data/instrument_fields.py", "market")}


def _imported_layers(path: Path) -> Iterator[tuple[str, int]]:
    """(layer, line) of every ``metatrade.<layer>`` import in ``path``, at any depth."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            names = [".".join([*base, *(node.module or "").split(".")]).strip(".")]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "metatrade" and len(parts) > 1:
                yield parts[1], node.lineno


def _upward_imports() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        layer = rel.parts[0]
        if layer not in LAYERS:
            continue
        for target, line in _imported_layers(path):
            above = target in LAYERS and LAYERS.index(target) > LAYERS.index(layer)
            if above and (rel.as_posix(), target) not in ALLOWED:
                found.append(f"{rel}:{line} imports metatrade.{target}")
    return found


def test_each_layer_imports_only_the_layers_above_it() -> None:
    upward = _upward_imports()
    assert not upward, f"imports against the layer table of docs/architecture.md: {upward}"


def test_market_never_imports_exact_and_exact_reads_the_market() -> None:
    """The arrow between the two runs one way: the exact objective reads the market's rules,
    costs and env config; the task family that offers both lives in ``envs/trading.py``."""
    market = [p for p in (SRC / "market").rglob("*.py")]
    exact = [p for p in (SRC / "exact").rglob("*.py")]
    assert not [p.name for p in market if "exact" in dict(_imported_layers(p))]
    assert any("market" in dict(_imported_layers(p)) for p in exact)


def test_the_layer_table_of_the_architecture_doc_is_the_order_checked() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    table = re.findall(r"^\| `(\w+)/` \|", doc, flags=re.MULTILINE)
    assert tuple(table) == LAYERS
