"""The run commands end to end with tiny budgets: meta-train (incl. SIGKILL + --resume),
train, adapt, backtest, evaluate, demo; bad input gives one clear line and exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from metatrade.agents.checkpoint import load_checkpoint
from metatrade.cli import app
from metatrade.data import DataLoader
from metatrade.market import Action, TradingEnv
from metatrade.training.checkpoint import checkpoint_path, load_run_checkpoint

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# 2D navigation, tiny: ~0.05 s per meta-iteration on one thread.
NAV_TINY = {
    "data": {"family": "nav2d"},
    "env": {"episode_length": 10},
    "policy": {"hidden_sizes": [8]},
    "meta": {
        "num_meta_iterations": 12,
        "meta_batch_size": 3,
        "episodes_per_task": 3,
        "num_evaluation_episodes": 2,
        "optimizer": "adam",
        "lr": 0.05,
    },
    "run": {"checkpoint_interval": 1, "torch_threads": 1},
}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_sigkilled_meta_train_resumes_to_the_same_parameters(tmp_path: Path) -> None:
    config = tmp_path / "nav.yaml"
    config.write_text(yaml.safe_dump(NAV_TINY))
    killed, full = tmp_path / "killed", tmp_path / "full"
    entry = "from metatrade.cli import app; app()"
    cmd = [sys.executable, "-c", entry, "meta-train", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL)
    ckpt = checkpoint_path(killed)
    deadline = time.monotonic() + 60
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    _, state = load_run_checkpoint(killed)  # the last checkpoint survived intact
    assert 1 <= state["iteration"] < 12

    resumed = subprocess.run(
        [*cmd, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr

    # The uninterrupted run, in this process (same code path, same single thread).
    from metatrade.training.build import make_family
    from metatrade.training.config import load_config
    from metatrade.training.trainer import Trainer

    torch.set_num_threads(1)
    cfg = load_config(config, out_dir=full)
    Trainer(make_family(cfg), None, config=cfg, run_dir=full, progress=False).meta_train()

    _, a = load_run_checkpoint(killed)
    _, b = load_run_checkpoint(full)
    assert a["iteration"] == b["iteration"] == 12
    for name, value in b["learner"]["params"].items():
        assert torch.equal(a["learner"]["params"][name], value), name
    for name, value in b["rng"].items():
        assert str(a["rng"][name]) == str(value)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trading meta-train run (3 real tasks, Finnifty held out) with a PPO baseline."""
    run = tmp_path_factory.mktemp("tiny")
    res = runner.invoke(app, ["meta-train", "-c", "tiny", "--out", str(run), "-n", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["train", "-c", "tiny", "--out", str(run / "ppo"), "--timesteps", "128"]
    )
    assert res.exit_code == 0, res.output
    return run


def test_meta_train_writes_the_run_directory(tiny_run: Path) -> None:
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert config["meta"]["num_meta_iterations"] == 2  # the -n override is what was run
    assert config["data"]["heldout"]["instruments"] == ["Finnifty"]
    metrics = pd.read_csv(tiny_run / "logs" / "metrics.csv")
    assert metrics["iteration"].tolist() == [1, 2]
    assert np.isfinite(metrics[["meta/loss", "meta/return_pre", "meta/return_post"]]).all().all()
    _, state = load_run_checkpoint(tiny_run)
    assert state["iteration"] == 2 and state["learner"]["iteration"] == 2
    _, ppo = load_checkpoint(tiny_run / "ppo" / "checkpoints" / "ppo.pt")
    assert ppo["num_timesteps"] == 128  # the --timesteps budget
    assert ppo["policy"].keys() == state["learner"]["params"].keys()  # the same network


def test_evaluate_on_named_tasks(tiny_run: Path, tmp_path: Path) -> None:
    res = invoke("evaluate", "--checkpoint", tiny_run, "--tasks", "Finnifty:60", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "eval" / "evaluation.csv")
    rows = [
        (m, None if np.isnan(k) else int(k)) for m, k in zip(table.method, table.k, strict=True)
    ]
    starts = [(m, k) for m in ("MAML", "PPO", "random") for k in (0, 1)]  # tiny: k = 0, 1
    assert rows == starts + [("buy-and-hold", None), ("flat", None)]
    flat = table[table.method == "flat"].iloc[0]
    assert (flat.return_mean, flat.return_ci_low, flat.backtest_return) == (0.0, 0.0, 0.0)
    for r in table.itertuples():  # the printed table shows the CSV's numbers, in percent
        assert f"{100 * r.return_mean:+.3f}" in res.output
    # buy-and-hold's backtest is one long position over the test split, run directly here and
    # liquidated at the last close (the exit cost paid), as every backtest ends
    arrays = DataLoader().get_task_arrays("Finnifty", "60")
    env = TradingEnv(arrays, lookback=8, split="test", episode_length=None)
    env.reset()
    done, action = False, Action.BUY_LONG
    while not done:
        *_, term, trunc, info = env.step(action)
        done, action = term or trunc, Action.HOLD
    eng = env.engine
    eng.execute_trade(
        int(Action.CLOSE_LONG), float(arrays.close[env.bar]), None, eng.equity_times[-1]
    )
    held = table[table.method == "buy-and-hold"].iloc[0].backtest_return
    assert held == pytest.approx(eng.equity / env.config.initial_capital - 1.0, rel=1e-12)
    doc = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert doc["tasks"] == ["Finnifty:60"] and len(doc["rows"]) == len(table)
    png = (tmp_path / "eval" / "evaluation_adaptation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_adapt_and_backtest(tiny_run: Path, tmp_path: Path) -> None:
    res = invoke("adapt", "--checkpoint", tiny_run, "-k", "1", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    config, adapted = load_checkpoint(tmp_path / "adapted" / "Finnifty_60.pt", "AdaptedPolicy")
    assert (config["task"], config["steps"]) == ("Finnifty:60", 1)
    meta = load_run_checkpoint(tiny_run)[1]["learner"]["params"]
    assert {k: v.shape for k, v in adapted["params"].items()} == {
        k: v.shape for k, v in meta.items()
    }
    assert any(not torch.equal(adapted["params"][k], meta[k]) for k in meta)  # one step moved

    res = invoke("backtest", "--checkpoint", tiny_run, "-k", "1", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "=== Backtesting Report ===" in res.output
    report = tmp_path / "reports" / "Finnifty_60"
    trades = pd.read_csv(report / "trades.csv")
    # every trade obeys the ledger: gross = side * qty * (exit - entry); 25 / 35 INR fees
    gross = trades.side * trades.quantity * (trades.exit_price - trades.entry_price)
    np.testing.assert_allclose(trades.gross_pnl, gross, rtol=1e-9)
    assert (trades.entry_cost == 25.0).all() and (trades.exit_cost == 35.0).all()
    np.testing.assert_allclose(trades.net_pnl, trades.gross_pnl - 60.0, rtol=1e-9, atol=1e-6)
    # the report's trade statistics are those of trades.csv
    metrics = json.loads((report / "metrics.json").read_text())["default costs"]
    assert metrics["num_trades"] == len(trades)
    assert metrics["gross_profit"] == pytest.approx(trades.net_pnl[trades.net_pnl > 0].sum())
    line = next(x for x in res.output.splitlines() if x.startswith("Number of Trades"))
    assert line.split()[3:] == [str(len(trades)), str(len(trades))]  # default, stressed
    # stressed costs: 2 bps more on each side's notional
    stressed = pd.read_csv(report / "trades_stressed.csv")
    np.testing.assert_allclose(
        stressed.entry_cost, 25.0 + 2e-4 * stressed.entry_price * stressed.quantity
    )
    assert (report / "equity.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_with_a_tiny_budget(tmp_path: Path) -> None:
    res = invoke("demo", "-c", "tiny", "--out", tmp_path, "--no-progress")
    assert res.exit_code == 0, res.output
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
