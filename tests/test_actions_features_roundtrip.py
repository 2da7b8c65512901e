"""``env.actions`` and ``env.features`` survive the whole path: config YAML -> meta-train ->
checkpoint -> evaluate / backtest / walkforward / signal, each reading the run's own values."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.training.build import load_meta_policy
from metatrade.training.checkpoint import load_run_checkpoint
from metatrade.training.config import packaged_config

runner = CliRunner()
FEATURES = ["ret_1_lag0", "ret_1_lag1", "logret_1", "minutes_since_open"]
GEOMETRY = ["--fold-bars", "10", "--adapt-bars", "40"]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _run(*args: str) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    return res.output


@pytest.fixture(scope="module")
def target_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exact-estimator run with target actions and four named features (two of them
    registered beyond the standard set), from a YAML file."""
    tmp = tmp_path_factory.mktemp("target")
    config = yaml.safe_load(packaged_config("tiny").read_text())
    env = {"actions": "target", "features": FEATURES, "observation": "position", "lookback": 2}
    config["env"] |= env
    config["meta"] |= {"estimator": "exact", "inner_lr": 1.0}
    path = tmp / "target.yaml"
    path.write_text(yaml.safe_dump(config))
    _run("meta-train", "-c", path, "--out", tmp / "run", "-n", "2")
    return tmp / "run"


def test_the_checkpoint_keeps_the_actions_and_features(target_run: Path) -> None:
    saved = yaml.safe_load((target_run / "config.yaml").read_text())
    assert saved["env"]["actions"] == "target" and saved["env"]["features"] == FEATURES
    cfg, state = load_run_checkpoint(target_run)
    assert cfg.env.actions == "target" and cfg.env.features == tuple(FEATURES)
    policy = load_meta_policy(cfg, state, target_run)
    assert policy.distribution.n == 3  # Categorical over short / flat / long
    assert policy.spec["obs_dim"] == 2 * len(FEATURES) + 1  # lookback x features + position


def test_evaluate_backtest_walkforward_and_signal_from_the_checkpoint(
    target_run: Path, tmp_path: Path
) -> None:
    out = _run("evaluate", "--checkpoint", target_run, "--out", tmp_path)
    table = pd.read_csv(tmp_path / "eval" / "evaluation.csv")
    assert {"MAML", "random", "buy-and-hold"} <= set(table.method)
    assert "error" not in out
    _run("backtest", "--checkpoint", target_run, "--out", tmp_path / "bt", "--steps", "1")
    report = next((tmp_path / "bt" / "reports").glob("*/report.txt")).read_text()
    assert "Total Return" in report
    wf = tmp_path / "wf"
    _run("walkforward", "--checkpoint", target_run, "--out", wf, *GEOMETRY)
    rows = set(pd.read_csv(wf / "walkforward.csv").row)
    assert {"MAML@k0", "MAML@k1"} <= rows
    for position in ("short", "long"):
        args = ["signal", "--checkpoint", target_run, "--position", position, *GEOMETRY]
        res = runner.invoke(app, [str(a) for a in [*args, "--format", "json"]])
        assert res.exit_code == 0, res.output
        [signal] = json.loads(res.stdout)  # stdout holds the JSON alone
        assert {k for k in signal if k.startswith("p_")} == {"p_SHORT", "p_FLAT", "p_LONG"}
        assert f"p_{signal['order']}" in signal
        assert signal["target"] == {"SHORT": -1, "FLAT": 0, "LONG": 1}[signal["order"]]
        assert signal["sampled"] is True  # evaluation.actions: sample (the default)


def test_an_unknown_feature_in_the_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"env": {"features": ["logret_1", "ret_lag0"]}}))
    res = runner.invoke(app, ["meta-train", "-c", str(path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "unknown feature 'ret_lag0'; did you mean ret_1_lag0" in " ".join(res.output.split())
    assert "Traceback" not in res.output
