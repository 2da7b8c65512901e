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
def evaluated(tiny_meta_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the tiny run evaluated with `--format csv` under a progress recorder,
    beside a second run of another seed: what `metatrade runs` lists."""
    import shutil

    from metatrade import progress

    root = tmp_path_factory.mktemp("runs")
    run = root / "a"
    shutil.copytree(tiny_meta_run, run)
    recorder = Recorder()
    with progress.listen(recorder):
        res = invoke("evaluate", "--checkpoint", run, "--format", "csv")
    assert res.exit_code == 0, res.output
    other = invoke(
        "meta-train", "-c", "tiny", "-n", "1", "--seed", "7", "--out", root / "b", "--no-progress"
    )
    assert other.exit_code == 0, other.output
    return run, res, recorder


def test_evaluate_as_csv_is_the_evaluation_csv(evaluated) -> None:
    run, res, _ = evaluated
    printed = pd.read_csv(io.StringIO(res.stdout))  # stdout: the CSV alone
    saved = pd.read_csv(run / "eval" / "evaluation.csv")
    pd.testing.assert_frame_equal(printed[saved.columns], saved)
    assert "held-out tasks" in res.stderr and "held-out tasks" not in res.stdout


def test_evaluate_reports_progress_per_start(evaluated) -> None:
    """Reproduction: evaluate printed nothing for minutes; now it reports a step per start
    and per batch of rows tested (bars on a terminal, nothing in a pipe)."""
    _, res, recorder = evaluated
    assert recorder.stages["meta-test: adapting 2 starts"] == ["MAML", "random"]
    assert recorder.stages["meta-test: testing"][-1] == "references"
    assert "meta-test" not in res.stderr  # not a terminal: no bars


def test_walkforward_shows_progress_bars_on_a_terminal(
    tiny_meta_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reproduction: walkforward printed nothing for minutes (174 s on four tasks); on a
    terminal it now shows a bar per task and one over the task's folds."""
    from metatrade import progress
    from metatrade.cli import output

    screen = io.StringIO()
    terminal = output._Console(file=screen, force_terminal=True, width=120)
    monkeypatch.setattr(output, "err_console", terminal)
    geometry = ["--fold-bars", "250", "--adapt-bars", "40"]
    res = invoke(
        "walkforward",
        "--checkpoint",
        tiny_meta_run,
        "--out",
        tmp_path,
        *geometry,
        "--format",
        "json",
    )
    assert res.exit_code == 0, res.output
    shown = screen.getvalue()
    assert "walk-forward: 1 tasks" in shown and "Finnifty:60:" in shown and "folds" in shown
    assert {r["row"] for r in json.loads(res.stdout)} >= {"MAML@k0", "MAML@k1"}  # stdout: data
    screen.truncate(0)
    with output.progress_bars(False), progress.stage("hidden stage", 1) as step:
        step()  # --no-progress: no bar even on a terminal
    assert "hidden stage" not in screen.getvalue()


def test_runs_lists_each_run_with_its_figures(evaluated) -> None:
    """Reproduction: there was no command to list runs; `metatrade runs` shows each with its
    figures, the MAML k = 1 row of its last evaluation among them."""
    run, _, _ = evaluated
    res = invoke("runs", run.parent, "--format", "json")
    assert res.exit_code == 0, res.output
    listed = {Path(r["run"]).name: r for r in json.loads(res.stdout)}
    assert set(listed) == {"a", "b"}  # each run once, nothing for its sub-folders
    a = listed["a"]
    figures = (a["estimator"], a["iterations"], a["held_out"], a["seed"])
    assert figures == ("sampled", "1/1", "Finnifty", 0)
    row = pd.read_csv(run / "eval" / "evaluation.csv").query("method == 'MAML' and k == 1")
    assert a["maml_k1_mean"] == pytest.approx(row.return_mean.item(), rel=1e-12)
    assert a["maml_k1_ci_low"] == pytest.approx(row.return_ci_low.item(), rel=1e-12)
    assert a["evaluated"] == "Finnifty:60" and listed["b"]["maml_k1_mean"] is None
    assert f"{100 * row.return_mean.item():+.3f}" in invoke("runs", run.parent).output
    empty = run.parent.parent / "no-runs-here"
    empty.mkdir()
    assert json.loads(invoke("runs", empty, "--format", "json").stdout) == []


def test_runs_compare_shows_figures_and_config_differences(evaluated) -> None:
    run, _, _ = evaluated
    other = run.parent / "b"
    res = invoke("runs", "--compare", run, other, "--format", "json")
    assert res.exit_code == 0, res.output
    rows = {r["key"]: r for r in json.loads(res.stdout)}
    a, b = str(run), str(other)
    assert (rows["run.seed"][a], rows["run.seed"][b]) == (0, 7)  # the one config difference
    assert [k for k in rows if "." in k] == ["run.seed"]
    assert rows["evaluated"][a] == "Finnifty:60" and rows["evaluated"][b] is None
    res = invoke("runs", "--compare", run, run / "logs")
    assert res.exit_code == 2 and "not a run directory" in res.output
