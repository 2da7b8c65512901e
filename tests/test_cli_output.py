"""Issue #18: what the commands print. Tables never wrap when piped (so grep finds a whole
file name or figure), every table command takes `--format table|csv|json` (one shared
renderer: the data alone on stdout), and long commands report progress on stderr."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.data import DataLoader, write_synthetic_tasks

runner = CliRunner()
TABLE_COMMANDS = [
    ["data", "list"],
    ["data", "validate"],
    ["evaluate"],
    ["backtest"],
    ["walkforward"],
    ["signal"],
    ["runs"],
]


def invoke(*args: object, **kw):
    """Not a terminal, and no COLUMNS: what a pipe or a redirect to a file sees."""
    res = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": None}, **kw)
    assert "Traceback" not in res.output
    return res


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic tasks and one unusable file with a long name and a long reason."""
    root = tmp_path_factory.mktemp("data")
    write_synthetic_tasks(root, 2, seed=0, n_bars=400)
    long_name = "An_Instrument_With_A_Name_Far_Longer_Than_Eighty_Columns_Of_A_Terminal_5.csv"
    (root / long_name).write_text("datetime,open,high,low,close\nyesterday,1,2,0,1\n")
    return root


def test_tables_are_not_cut_when_piped(folder: Path) -> None:
    """Reproduction: off a terminal, tables were cut to 80 columns: the skipped file's name
    and its reason wrapped over several lines and `grep` missed them."""
    res = invoke("data", "list", "--data", folder)
    assert res.exit_code == 0, res.output
    long_name = next(p.name for p in folder.glob("An_*"))
    [line] = [x for x in res.output.splitlines() if long_name in x]
    assert "cannot parse 'yesterday' as a time" in line  # its reason, on the same line
    assert max(len(x) for x in res.output.splitlines()) > 80


@pytest.mark.parametrize("command", TABLE_COMMANDS, ids=" ".join)
def test_every_table_command_takes_format(command: list[str]) -> None:
    """Reproduction: no command had `--format csv|json` for its table."""
    res = invoke(*command, "--help")
    assert res.exit_code == 0, res.output
    assert "--format" in res.output and "table|csv|json" in res.output.replace(" ", "")


def test_data_list_as_csv_and_json_is_the_loaders_table(folder: Path) -> None:
    loader = DataLoader(folder, cache_dir=False)
    with pytest.warns(UserWarning):
        tasks = loader.get_available_tasks()
    res = invoke("data", "list", "--data", folder, "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))  # stdout: the CSV alone
    assert [r["task"] for r in rows] == [str(t) for t in tasks]
    for row, task in zip(rows, tasks, strict=True):
        splits = loader.get_task_arrays(*task).splits
        assert [int(row[k]) for k in ("train", "validation", "test")] == [
            b - a for a, b in (splits[k] for k in ("train", "validation", "test"))
        ]
    assert "skipped" in res.stderr  # the rest went to stderr
    res = invoke("data", "list", "--data", folder, "--format", "json")
    assert [r["bars"] for r in json.loads(res.stdout)] == [400, 400]


def test_data_validate_as_json_lists_every_problem(folder: Path) -> None:
    res = invoke("data", "validate", folder, "--format", "json")
    assert res.exit_code == 1  # problems found, as in table form
    errors = [p for p in json.loads(res.stdout) if p["level"] == "error"]
    assert {(p["file"][:3], p["row"], p["field"]) for p in errors} == {
        ("An_", 1, "datetime"),
        ("An_", 1, "low"),  # its price 0
    }


class Recorder:
    """A ``metatrade.progress`` listener that keeps what it was told."""

    def __init__(self) -> None:
        self.stages: dict[str, list[str | None]] = {}

    def start(self, description: str, total: int) -> str:
        self.stages[description] = []
        return description

    def advance(self, handle: str, detail: str | None) -> None:
        self.stages[handle].append(detail)

    def stop(self, handle: str) -> None:
        pass


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    res = invoke("meta-train", "-c", "tiny", "-n", "1", "--out", run, "--no-progress")
    assert res.exit_code == 0, res.output
    return run


def test_evaluate_as_csv_is_the_evaluation_csv_and_reports_each_start(tiny_run: Path) -> None:
    """Reproduction: evaluate printed nothing for minutes; now it reports a step per start
    and per batch of rows tested (bars on a terminal, nothing in a pipe)."""
    from metatrade import progress

    recorder = Recorder()
    with progress.listen(recorder):
        res = invoke("evaluate", "--checkpoint", tiny_run, "--format", "csv", "--overwrite")
    assert res.exit_code == 0, res.output
    printed = pd.read_csv(io.StringIO(res.stdout))
    saved = pd.read_csv(tiny_run / "eval" / "evaluation.csv")
    pd.testing.assert_frame_equal(printed[saved.columns], saved)
    assert "held-out tasks" in res.stderr and "held-out tasks" not in res.stdout
    assert recorder.stages["meta-test: adapting 2 starts"] == ["MAML", "random"]
    assert recorder.stages["meta-test: testing"][-1] == "references"
    assert "meta-test" not in res.stderr  # not a terminal: no bars


def test_walkforward_shows_progress_bars_on_a_terminal(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reproduction: walkforward printed nothing for minutes (174 s on four tasks); on a
    terminal it now shows a bar per task and one over the task's folds."""
    from metatrade import progress
    from metatrade.cli import output

    screen = io.StringIO()
    terminal = output._Console(file=screen, force_terminal=True, width=120)
    monkeypatch.setattr(output, "err_console", terminal)
    args = [
        "walkforward",
        "--checkpoint",
        tiny_run,
        "--out",
        tmp_path,
        "--fold-bars",
        "250",
        "--adapt-bars",
        "40",
    ]
    res = invoke(*args, "--format", "json")
    assert res.exit_code == 0, res.output
    shown = screen.getvalue()
    assert "walk-forward: 1 tasks" in shown and "Finnifty:60:" in shown and "folds" in shown
    assert {r["row"] for r in json.loads(res.stdout)} >= {"MAML@k0", "MAML@k1"}  # stdout: data
    screen.truncate(0)
    with output.progress_bars(False), progress.stage("hidden stage", 1) as step:
        step()  # --no-progress: no bar even on a terminal
    assert "hidden stage" not in screen.getvalue()


def test_runs_lists_a_run_as_json(tmp_path: Path) -> None:
    write_synthetic_tasks(tmp_path / "none", 1, seed=0, n_bars=400)  # not a run: not listed
    res = invoke("runs", tmp_path, "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == []
