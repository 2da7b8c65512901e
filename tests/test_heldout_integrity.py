"""Issue #11 items 5, 6, 7 (PPO shape) and 10, through the commands a user runs.

5: a held-out name matching no task (`Finifty`) is an error; the checkpoint records its
   training tasks and evaluate / adapt / backtest refuse them unless --allow-seen (then
   flagged); a --tasks list naming a missing task is an error in every command.
6: `evaluate --data d --tasks MyIndex:60,MyIndex:30` with only those two files in d; a run
   trained on one task can be backtested; a synthetic-family run evaluated on a user's
   --data folder works without an oracle (was a KeyError traceback).
10: `evaluate --help` lists no option it rejects; every command the README says takes
   --data does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from instrument_helpers import describe_instruments
from metatrade.cli import app
from metatrade.data.loader import SAMPLE_DIR
from metatrade.errors import ConfigError
from metatrade.training.checkpoint import load_run_checkpoint

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny: meta-trains on Nifty:60 and Bank_Nifty:60, Finnifty held out (1 iteration)."""
    out = tmp_path_factory.mktemp("run")
    res = invoke("meta-train", "-c", "tiny", "--out", out, "-n", "1", "--no-progress")
    assert res.exit_code == 0, res.output
    return out


def test_heldout_instrument_matching_no_task_is_an_error(tmp_path: Path) -> None:
    """Reproduction: `heldout: {instruments: [Finifty]}` held out nothing and meta-trained on
    Finnifty, the instrument meant to be unseen."""
    from metatrade.training.config import load_config
    from metatrade.training.task_sets import make_loader

    cfg = load_config("tiny", overrides={"data.heldout.instruments": ["Finifty"]})
    with pytest.raises(ConfigError, match="Finifty matches no task.*Bank_Nifty, Finnifty, Nifty"):
        make_loader(cfg)


def test_checkpoint_records_the_exact_training_tasks(run: Path) -> None:
    _, state = load_run_checkpoint(run)
    assert state["extra"]["train_tasks"] == ["Bank_Nifty:60", "Nifty:60"]


def test_a_training_task_is_refused_unless_allow_seen(run: Path, tmp_path: Path) -> None:
    """Reproduction: `evaluate --tasks Nifty:60` on a run meta-trained on Nifty:60 printed
    a "held-out" table for it."""
    for command in ("evaluate", "adapt", "backtest"):
        res = invoke(command, "--checkpoint", run, "--tasks", "Nifty:60", "--out", tmp_path)
        assert res.exit_code == 2 and "--allow-seen" in res.output, (command, res.output)
    res = invoke(
        "evaluate", "--checkpoint", run, "--tasks", "Nifty:60", "--allow-seen", "--out", tmp_path
    )
    assert res.exit_code == 0, res.output
    assert "NOT HELD OUT" in res.output
    assert "NOT HELD OUT" in (tmp_path / "eval" / "evaluation.txt").read_text()


@pytest.mark.parametrize(
    "command", ["meta-train", "train", "demo", "evaluate", "adapt", "backtest"]
)
def test_tasks_naming_a_missing_task_is_an_error_in_every_command(
    run: Path, tmp_path: Path, command: str
) -> None:
    """Reproduction: `--tasks Finnifty:60,Nifty:7` silently dropped Nifty:7."""
    args = ["--checkpoint", run] if command in ("evaluate", "adapt", "backtest") else ["-c", "tiny"]
    res = invoke(command, *args, "--tasks", "Finnifty:60,Nifty:7", "--out", tmp_path)
    assert res.exit_code == 2, res.output
    assert "Nifty:7 not found" in res.output


def _my_index(tmp_path: Path) -> Path:
    folder = tmp_path / "d"
    folder.mkdir()
    shutil.copy(SAMPLE_DIR / "Nifty_60.parquet", folder / "MyIndex_60.parquet")
    shutil.copy(SAMPLE_DIR / "Nifty_30.parquet", folder / "MyIndex_30.parquet")
    describe_instruments(folder)  # an NSE index
    return folder


def test_evaluate_on_a_folder_holding_only_the_evaluation_tasks(run: Path, tmp_path: Path) -> None:
    """Reproduction: `evaluate --data d --tasks MyIndex:60,MyIndex:30` failed with "no
    meta-training tasks left" when d held only those two files."""
    d = _my_index(tmp_path)
    res = invoke(
        "evaluate",
        "--checkpoint",
        run,
        "--data",
        d,
        "--tasks",
        "MyIndex:60,MyIndex:30",
        "--out",
        tmp_path / "e",
    )
    assert res.exit_code == 0, res.output
    assert "MyIndex:30, MyIndex:60" in res.output and "MAML" in res.output


def test_a_run_trained_on_one_task_can_be_backtested(tmp_path: Path) -> None:
    """Reproduction: `meta-train --tasks Nifty:60` then `backtest --checkpoint R` said "no
    held-out tasks" (the held-out task was not among the one training task)."""
    config = tmp_path / "one.yaml"
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    raw["data"]["heldout"] = {"tasks": ["Finnifty:60"]}
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "r"
    res = invoke("meta-train", "-c", config, "--tasks", "Nifty:60", "-n", "1", "--out", out)
    assert res.exit_code == 0, res.output
    res = invoke("backtest", "--checkpoint", out, "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    assert "Task: Finnifty:60" in res.output


def test_synthetic_run_evaluated_on_a_user_folder_needs_no_oracle(tmp_path: Path) -> None:
    """Reproduction: evaluating a synthetic-family run with `--data` on a user's folder wrote
    synthetic files into it and ended in a KeyError traceback (no oracle regime)."""
    config = tmp_path / "syn.yaml"
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    raw["data"] = {"family": "synthetic", "num_synthetic_tasks": 3, "synthetic_bars": 400}
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "r"
    assert invoke("meta-train", "-c", config, "-n", "1", "--out", out).exit_code == 0
    d = _my_index(tmp_path)
    res = invoke(
        "evaluate", "--checkpoint", out, "--data", d, "--tasks", "MyIndex:60", "--out", tmp_path
    )
    assert res.exit_code == 0, res.output
    assert "oracle" not in res.output
    assert sorted(p.name for p in d.iterdir()) == [
        "MyIndex_30.parquet",
        "MyIndex_60.parquet",
        "instruments.yaml",
    ]


def test_ppo_baseline_with_another_lookback_is_a_clear_error(run: Path, tmp_path: Path) -> None:
    """Reproduction: `evaluate --ppo` with a PPO agent trained at another lookback ended in
    a shape-mismatch traceback."""
    config = tmp_path / "lb4.yaml"
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    raw["env"]["lookback"] = 4
    config.write_text(yaml.safe_dump(raw))
    res = invoke("train", "-c", config, "--timesteps", "64", "--out", tmp_path / "lb4")
    assert res.exit_code == 0, res.output
    ppo = tmp_path / "lb4" / "ppo" / "checkpoints" / "ppo.pt"  # PPO writes under <run>/ppo
    res = invoke("evaluate", "--checkpoint", run, "--ppo", ppo, "--out", tmp_path / "e")
    assert res.exit_code == 2, res.output
    assert "lookback 8" in res.output and "error:" in res.output


def test_evaluate_help_lists_no_option_it_rejects() -> None:
    """Reproduction: `evaluate --help` listed --config, which the command then refused."""
    assert "--config" not in invoke("evaluate", "--help").output


def test_every_command_the_readme_says_takes_data_does() -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Command line") : text.index("## Documentation")]
    claimed = set(re.findall(r"metatrade ((?:data )?[a-z-]+) [^\n]*--data", section))
    said = re.search(r"`--data DIR`[^.]*?: ([^.]*)\.", section)
    assert said, "the README says which commands take --data"
    claimed |= set(re.findall(r"`([a-z -]+)`", said.group(1)))
    assert {"evaluate", "data list", "data validate", "meta-train"} <= claimed
    for command in claimed:
        assert "--data" in invoke(*command.split(), "--help").output, command
