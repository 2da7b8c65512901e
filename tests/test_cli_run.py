"""The run commands end to end with tiny budgets: meta-train, train,
adapt, backtest, evaluate, demo; bad input gives one clear line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.training.checkpoint import checkpoint_path, load_run_checkpoint

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trading meta-train run (3 real tasks, Finnifty held out) with a PPO baseline."""
    run = tmp_path_factory.mktemp("tiny")
    res = runner.invoke(app, ["meta-train", "-c", "tiny", "--out", str(run), "-n", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "-c", "tiny", "--out", str(run), "--timesteps", "128"])
    assert res.exit_code == 0, res.output
    return run


def test_meta_train_writes_the_run_directory(tiny_run: Path) -> None:
    assert (tiny_run / "config.yaml").is_file()
    assert (tiny_run / "logs" / "metrics.csv").is_file()
    assert checkpoint_path(tiny_run).is_file()
    assert (tiny_run / "ppo" / "checkpoints" / "ppo.pt").is_file()


def test_evaluate_on_named_tasks(tiny_run: Path, tmp_path: Path) -> None:
    res = invoke("evaluate", "--checkpoint", tiny_run, "--tasks", "Finnifty:60", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    for method in ("MAML", "PPO", "random", "buy-and-hold", "flat"):
        assert method in res.output
    for name in ("evaluation.csv", "evaluation.json", "evaluation_adaptation.png"):
        assert (tmp_path / "eval" / name).is_file()

    # A second evaluate on the same run silently overwrote the first: now it refuses.
    first = (tmp_path / "eval" / "evaluation.csv").read_bytes()
    res = invoke("evaluate", "--checkpoint", tiny_run, "--tasks", "Finnifty:60", "--out", tmp_path)
    assert res.exit_code == 2
    assert "--overwrite" in res.output and str(tmp_path / "eval") in " ".join(res.output.split())
    assert (tmp_path / "eval" / "evaluation.csv").read_bytes() == first


def test_backtest_of_a_loose_checkpoint_writes_next_to_it(tiny_run: Path, tmp_path: Path) -> None:
    """`backtest --checkpoint some/dir/model.pt` wrote its reports two folders up (into
    `some/reports`); now next to the file."""
    loose = tmp_path / "shared" / "models" / "model.pt"
    loose.parent.mkdir(parents=True)
    loose.write_bytes(checkpoint_path(tiny_run).read_bytes())
    res = invoke("backtest", "--checkpoint", loose)
    assert res.exit_code == 0, res.output
    assert (loose.parent / "reports" / "Finnifty_60" / "trades.csv").is_file()
    assert not (tmp_path / "shared" / "reports").exists()


def test_adapt_and_backtest(tiny_run: Path, tmp_path: Path) -> None:
    res = invoke("adapt", "--checkpoint", tiny_run, "-k", "1", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "adapted" / "Finnifty_60.pt").is_file()
    res = invoke("backtest", "--checkpoint", tiny_run, "-k", "1", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "=== Backtesting Report ===" in res.output
    report = tmp_path / "reports" / "Finnifty_60"
    assert (report / "equity.png").is_file() and (report / "trades.csv").is_file()


def test_demo_with_a_tiny_budget(tmp_path: Path) -> None:
    """The demo over a half-trained run (as Ctrl-C in its step 1 leaves it) refuses without
    --resume; `demo --resume` continues meta-training from its checkpoint, then the rest."""
    res = invoke("meta-train", "-c", "tiny", "--out", tmp_path, "-n", "2", "--no-progress")
    assert res.exit_code == 0, res.output
    res = invoke("demo", "-c", "tiny", "--out", tmp_path, "--no-progress")
    assert res.exit_code == 2 and "--resume" in res.output
    res = invoke("demo", "-c", "tiny", "--out", tmp_path, "--no-progress", "--resume")
    assert res.exit_code == 0, res.output
    assert "it 3/4" in res.output and "it 1/4" not in res.output  # continued, not redone
    assert "Held-out evaluation" in res.output
    assert res.output.count("=== Backtesting Report ===") == 2
    assert (tmp_path / "eval" / "evaluation_adaptation.png").is_file()
    assert (tmp_path / "reports" / "Finnifty_60" / "maml" / "equity.png").is_file()


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta:\n  inner_lr: abc\n")
    res = invoke("meta-train", "--config", bad, "--out", tmp_path / "x")
    assert res.exit_code == 2
    assert f"{bad}: meta.inner_lr: expected a number, got 'abc'" in " ".join(res.output.split())
    res = invoke("meta-train", "--tasks", "Nifty5", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "--tasks" in res.output


def test_unwritable_out_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    res = invoke("meta-train", "--out", blocker / "run")
    assert res.exit_code == 2
    assert "error:" in res.output and "Not a directory" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_checkpoint_is_a_clear_error(tiny_run: Path, tmp_path: Path, damage: str) -> None:
    data = checkpoint_path(tiny_run).read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"junk" * 64)
    res = invoke("evaluate", "--checkpoint", bad)
    assert res.exit_code == 2
    assert "truncated or corrupted" in res.output


def test_incompatible_checkpoint_is_a_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    # A different lookback changes the observation width: the meta-parameters cannot fit.
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    cfg["env"]["lookback"] = 4
    from metatrade.training.checkpoint import RNGStreams, save_run_checkpoint
    from metatrade.training.config import validate_config

    _, state = load_run_checkpoint(tiny_run)
    other = tmp_path / "other.pt"
    save_run_checkpoint(
        other, "MetaTrainer", validate_config(cfg), 2, state["learner"], RNGStreams(0)
    )
    res = invoke("evaluate", "--checkpoint", other, "--out", tmp_path)
    assert res.exit_code == 2
    assert "meta-parameters does not match the model" in " ".join(res.output.split())
