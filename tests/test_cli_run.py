"""The run commands end to end with tiny budgets: meta-train, train,
adapt, backtest, evaluate, demo; bad input gives one clear line and exit code 2."""

from __future__ import annotations

import json
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
from metatrade.evaluation.registry import TrialRegistry
from metatrade.market import Action, TradingEnv
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
    classical = ["AR(1)", "momentum", "reversal", "time-of-day", "classical-selected"]
    refs = [(m, None) for m in (*classical, "buy-and-hold", "flat")]  # default baselines
    assert rows == starts + refs
    assert "paired MAML@k1 - classical-selected" in res.output
    flat = table[table.method == "flat"].iloc[0]
    assert (flat.return_mean, flat.return_ci_low, flat.backtest_return) == (0.0, 0.0, 0.0)
    for r in table.itertuples():  # the printed table shows the CSV's numbers, in percent
        assert f"{100 * r.return_mean:+.3f}" in res.output
    # buy-and-hold's backtest is one long position over the validation split (what evaluate
    # scores without --final), run directly here and liquidated at the last close (the exit
    # cost paid), as every backtest ends
    assert set(table.split) == {"validation"} and "scored on the validation split" in res.output
    arrays = DataLoader().get_task_arrays("Finnifty", "60")
    env = TradingEnv(arrays, lookback=8, split="validation", episode_length=None)
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
    # a final report: each of its three reads of the test period (the table, the table at
    # realistic costs, the walk-forward) is a recorded look, and says so
    looks = TrialRegistry(tmp_path.parent / "trials.sqlite").looks(
        json.loads((tmp_path / "eval" / "evaluation.json").read_text())["period"]["data_hash"],
        "test",
    )
    ours = [x for x in looks if x.command == "metatrade demo" and x.run.startswith(str(tmp_path))]
    assert len(ours) == 3 and "scored on the test split (final: look" in res.output
    # where each setting was chosen (issue 21 item 7): tiny's own settings are the run's
    assert "Settings provenance (none chosen on a test period)" in res.output
    assert "meta.inner_lr = 0.1 [run]: the demo's value is 10.0" in res.output
    assert (tmp_path / "provenance.md").read_text().startswith("Settings provenance")


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


def test_walkforward_and_signal_on_a_sampled_run(tiny_run: Path, tmp_path: Path) -> None:
    """`metatrade walkforward` / `signal` on the tiny sampled run with its PPO baseline:
    MAML, pretrained (PPO) and random rows, frozen and re-adapted, and one decision."""
    geometry = ["--fold-bars", "10", "--adapt-bars", "40"]
    out = tmp_path / "wf"
    args = ["walkforward", "--checkpoint", str(tiny_run), "--out", str(out), *geometry]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == f"report: {out / 'walkforward.html'}"
    rows = set(pd.read_csv(out / "walkforward.csv").row)
    assert {f"{s}@k{k}" for s in ("MAML", "pretrained", "random") for k in (0, 1)} <= rows
    res = runner.invoke(app, ["signal", "--checkpoint", str(tiny_run), *geometry])
    assert res.exit_code == 0, res.output
    assert "next decision (MAML, k=1" in res.output
    res = runner.invoke(
        app, ["signal", "--checkpoint", str(tiny_run), *geometry, "--format", "json"]
    )
    assert res.exit_code == 0, res.output
    [signal] = json.loads(res.stdout)  # stdout holds the JSON alone
    assert signal["position"] == 0 and signal["steps"] == 1


def test_train_out_ending_in_ppo_is_the_baseline_evaluate_finds(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Reproduction: the quickstart's `train ... --out runs/tiny/ppo` wrote
    `runs/tiny/ppo/ppo`, and `evaluate --checkpoint runs/tiny` then skipped the PPO row."""
    import shutil

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("ppo", "eval", "reports"))
    res = invoke("train", "-c", "tiny", "--out", run / "ppo", "--timesteps", "64")
    assert res.exit_code == 0, res.output
    assert (run / "ppo" / "checkpoints" / "ppo.pt").is_file() and not (run / "ppo" / "ppo").exists()
    res = invoke("evaluate", "--checkpoint", run, "--tasks", "Finnifty:60")
    assert res.exit_code == 0, res.output
    assert "PPO" in set(pd.read_csv(run / "eval" / "evaluation.csv").method)


def test_backtest_overwrite_replaces_the_whole_report_folder(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Reproduction: `backtest --overwrite` left the old reports of other tasks beside the
    new ones (reports/Nifty_5/ of an earlier --tasks Nifty:5 run stayed)."""
    old = tmp_path / "reports" / "Nifty_5"
    old.mkdir(parents=True)
    (old / "trades.csv").write_text("an earlier backtest\n")
    res = invoke("backtest", "--checkpoint", tiny_run, "--out", tmp_path, "--overwrite")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "Finnifty_60",
        "provenance.json",
    ]


def test_walkforward_refuses_to_replace_its_report_and_takes_the_run_lock(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Reproduction: `metatrade walkforward` silently overwrote <run>/walkforward/, had no
    --overwrite and took no run-directory lock."""
    import os
    import subprocess
    import sys

    from test_run_dirs import HOLD_LOCK

    geometry = ["--fold-bars", "10", "--adapt-bars", "40", "-k", "0", "--final"]
    out = tmp_path / "wf"
    out.mkdir()
    (out / "walkforward_old.png").write_bytes(b"an earlier report")
    res = invoke("walkforward", "--checkpoint", tiny_run, "--out", out, *geometry)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "walkforward_old.png").read_bytes() == b"an earlier report"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tiny_run)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        res = invoke("walkforward", "--checkpoint", tiny_run, *geometry)
        assert res.exit_code == 2 and "being written by another metatrade process" in res.output
        assert not (tiny_run / "walkforward").exists()
    finally:
        holder.communicate("done\n", timeout=30)
    res = invoke("walkforward", "--checkpoint", tiny_run, "--out", out, "--overwrite", *geometry)
    assert res.exit_code == 0, res.output
    assert not (out / "walkforward_old.png").exists() and (out / "walkforward.html").is_file()


def test_backtest_k1_equals_evaluates_maml_k1_backtest_on_a_sampled_run(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Reproduction: on a sampled-estimator run, `backtest -k 1` and the MAML k = 1 backtest
    of `evaluate` (same checkpoint, seed and k) disagreed (-6.74 % vs +10.06 % on tiny):
    backtest adapted on meta.episodes_per_task episodes from its own streams, evaluate on
    evaluation.adaptation_episodes from the protocol's. Both now adapt through
    MetaTestProtocol.adapt, so they backtest the same parameters."""
    res = invoke("evaluate", "--checkpoint", tiny_run, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "eval" / "evaluation.csv")
    maml_k1 = table[(table.method == "MAML") & (table.k == 1)].backtest_return.item()
    res = invoke("backtest", "--checkpoint", tiny_run, "-k", "1", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "reports" / "Finnifty_60" / "metrics.json").read_text())
    assert report["default costs"]["total_return"] == pytest.approx(maml_k1, rel=1e-9, abs=1e-12)
