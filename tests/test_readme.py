"""The documentation runs as written: the README, the quickstart and the how-to guides.

Every code block of those files is executed, in order, in a fresh folder (``configs/``
linked in, as in a checkout): ``python`` blocks in one namespace per file, ``yaml`` blocks
whose first line is ``# <file name>`` written to that file, ``bash`` blocks line by line as
``metatrade`` commands (through the CLI, with ``-n``/``--iterations`` capped at
``MAX_ITERATIONS`` and ``--timesteps`` at ``MAX_TIMESTEPS``: tiny budgets). A block whose
first line is ``# illustration: <why>`` is not run (set-up, minutes-long jobs); a
``# synopsis:`` block is checked instead: each ``metatrade`` command it names exists and
takes every option it shows. docs/README.md explains both markers to writers.
"""

from __future__ import annotations

import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from metatrade.cli import app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
QUICKSTART = REPO / "docs" / "quickstart.md"
HOWTOS = sorted((REPO / "docs" / "howto").glob("*.md"))
MAX_ITERATIONS = 1
MAX_TIMESTEPS = 256
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", flags=re.S | re.M)


def code_blocks(path: Path) -> list[tuple[str, int, str]]:
    """``(language, line number, code)`` of every fenced block, in order."""
    text = path.read_text()
    return [
        (m.group(1), text.count("\n", 0, m.start()) + 2, m.group(2)) for m in _BLOCK.finditer(text)
    ]


def marker(code: str) -> str | None:
    first = code.lstrip().splitlines()[0] if code.strip() else ""
    for name in ("illustration", "synopsis"):
        if first.startswith(f"# {name}:"):
            return name
    return None


def commands(code: str) -> list[list[str]]:
    """The block's command lines as argument lists (continuations joined, comments cut)."""
    joined = code.replace("\\\n", " ")
    return [args for line in joined.splitlines() if (args := shlex.split(line, comments=True))]


def tiny_budget(args: list[str]) -> list[str]:
    """``args`` with the iteration and time-step budgets capped (the docs' own otherwise)."""
    caps = {"-n": MAX_ITERATIONS, "--iterations": MAX_ITERATIONS, "--timesteps": MAX_TIMESTEPS}
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in caps and out[i + 1].isdigit():
            out[i + 1] = str(min(int(out[i + 1]), caps[arg]))
    return out


def run_metatrade(args: list[str], where: str) -> str:
    assert args[0] == "metatrade", (
        f"{where}: `{' '.join(args)}` is not a metatrade command; mark the block "
        "`# illustration: <why>` if it is not meant to run in the docs test"
    )
    res = CliRunner().invoke(app, tiny_budget(args[1:]))
    assert res.exit_code == 0, f"{where}: `{' '.join(args)}` failed:\n{res.output}"
    return res.output


def check_synopsis(args: list[str], where: str) -> None:
    """The command exists and takes every option the synopsis line shows."""
    assert args[0] == "metatrade", f"{where}: a synopsis line names a metatrade command"
    command: Any = typer.main.get_command(app)
    words = [a for a in args[1:] if re.fullmatch(r"[a-z][a-z-]*", a)]
    for word in words:
        if not hasattr(command, "commands"):  # a command, not a group of them
            break
        assert word in command.commands, f"{where}: no command `{word}`"
        command = command.commands[word]
    shown = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", " ".join(args[1:])))
    taken = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    assert shown <= taken, f"{where}: `{command.name}` takes no {sorted(shown - taken)}"


def run_document(path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run every block of ``path`` in ``folder`` (module docstring); returns the namespace
    its Python blocks share."""
    monkeypatch.chdir(folder)
    (folder / "configs").symlink_to(REPO / "configs")
    module = types.ModuleType(f"docs_{path.stem.replace('-', '_')}")  # dataclasses need one
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, Any] = module.__dict__
    for language, line, code in code_blocks(path):
        where = f"{path.relative_to(REPO)}:{line}"
        kind = marker(code)
        if kind == "illustration":
            continue
        if language == "python":
            exec(compile(code, where, "exec"), namespace)
        elif language == "yaml":
            name = code.splitlines()[0].removeprefix("#").strip()
            assert name.endswith(".yaml"), f"{where}: a yaml block starts with `# <file>.yaml`"
            (folder / name).write_text(code)
        elif language == "bash":
            for args in commands(code):
                if kind == "synopsis":
                    check_synopsis(args, where)
                else:
                    run_metatrade(args, where)
        else:
            raise AssertionError(f"{where}: no rule to run a ```{language} block")
    return namespace


def test_readme_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = run_document(README, tmp_path, monkeypatch)
    assert "=== Backtesting Report ===" in capsys.readouterr().out
    report = namespace["report"]
    assert isinstance(report, dict) and "metrics" in report
    assert (tmp_path / "runs" / "quickstart" / "checkpoints").is_dir()


def test_quickstart_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = run_document(QUICKSTART, tmp_path, monkeypatch)
    assert "learner" in namespace  # the nav2d part ran
    table = pd.read_csv(tmp_path / "runs" / "tiny" / "eval" / "evaluation.csv")
    assert {"MAML", "PPO", "random"} <= set(table.method)  # evaluate found the PPO baseline
    assert (tmp_path / "runs" / "tiny" / "reports" / "Finnifty_60" / "trades.csv").is_file()


@pytest.mark.parametrize("path", HOWTOS, ids=lambda p: p.stem)
def test_howto_runs_as_written(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_document(path, tmp_path, monkeypatch)


def test_a_drifted_synopsis_fails(tmp_path: Path) -> None:
    """The synopsis check fails on an option a command does not take (a renamed one)."""
    check_synopsis(["metatrade", "walkforward", "--checkpoint", "RUN", "--from", "X"], "ok")
    with pytest.raises(AssertionError, match="takes no"):
        check_synopsis(["metatrade", "signal", "--checkpoint", "RUN", "--frm", "X"], "drift")
    with pytest.raises(AssertionError, match="no command"):
        check_synopsis(["metatrade", "data", "lst"], "drift")


def test_docs_readme_explains_the_markers() -> None:
    guide = (REPO / "docs" / "README.md").read_text()
    assert "# illustration:" in guide and "# synopsis:" in guide
