"""The exact estimator's pretrained start trained in a child process beside meta-training
(``training.pretrained.PretrainingJob``): the same parameters as in the command's own
process, failures reported in one line, and ``meta-train`` saving what the child sent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.data import DataLoader
from metatrade.training import pretrained
from metatrade.training.build import make_family, make_policy_for
from metatrade.training.config import load_config, packaged_config
from metatrade.training.pretrained import PretrainingError, PretrainingJob, train_pretrained

runner = CliRunner()


def _exact_config(tmp_path: Path, **meta: object) -> Path:
    """configs/tiny.yaml with the exact estimator (position-only observation)."""
    raw = yaml.safe_load(packaged_config("tiny").read_text())
    raw["env"]["observation"] = "position"
    raw["meta"].update(estimator="exact", inner_lr=1.0, **meta)
    path = tmp_path / "tiny_exact.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_child_trains_bitwise_the_start_this_process_would(tmp_path: Path) -> None:
    cfg = load_config(_exact_config(tmp_path, num_meta_iterations=3), out_dir=tmp_path / "run")
    family = make_family(cfg)
    here = train_pretrained(cfg, family, make_policy_for(cfg, family))
    there = PretrainingJob(cfg).result()
    assert there["steps"] == here["steps"] == 6  # 3 iterations x (1 inner + 1 outer)
    assert set(there["params"]) == set(here["params"])
    for name, value in here["params"].items():
        assert torch.equal(there["params"][name], value), name


def test_a_failing_child_is_one_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    raw = yaml.safe_load(_exact_config(tmp_path).read_text())
    for name in ("Nifty", "Bank_Nifty", "Finnifty"):  # tiny.yaml's tasks, at 60 minutes
        shutil.copy(DataLoader().task_path(name, "60"), data)
    raw["data"]["data_dir"] = str(data)
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, out_dir=tmp_path / "run")
    shutil.rmtree(data)  # the data went away after the config was read
    with pytest.raises(PretrainingError, match=r"training the pretrained start: .*data_dir"):
        PretrainingJob(cfg).result()


def test_meta_train_saves_the_start_the_child_trained(tmp_path: Path, monkeypatch) -> None:
    """The same run twice: the start trained in-process, then in the child (threshold 0):
    the saved parameters are identical."""
    config = _exact_config(tmp_path, num_meta_iterations=2)
    saved = {}
    for name, threshold in (("here", 10**9), ("child", 0)):
        monkeypatch.setattr(pretrained, "BACKGROUND_MIN_STEPS", threshold)
        monkeypatch.setattr(pretrained, "_usable_cpus", lambda: 2)
        run = tmp_path / name
        res = runner.invoke(app, ["meta-train", "-c", str(config), "--out", str(run)])
        assert res.exit_code == 0, res.output
        assert ("in a child process" in res.output) == (name == "child"), res.output
        saved[name] = pretrained.load_pretrained(run)
    assert saved["here"] is not None and saved["child"] is not None
    for key, value in saved["here"].items():
        assert torch.equal(saved["child"][key], value), key


def test_a_failed_child_costs_time_not_the_run(tmp_path: Path, monkeypatch) -> None:
    """The child dies (killed, out of memory): meta-train warns and trains the same start in
    its own process; the run ends with its pretrained start saved."""
    monkeypatch.setattr(pretrained, "BACKGROUND_MIN_STEPS", 0)
    monkeypatch.setattr(pretrained, "_usable_cpus", lambda: 2)

    def died(self):
        self.stop()
        raise PretrainingError("training the pretrained start: the process ended with exit -9")

    monkeypatch.setattr(PretrainingJob, "result", died)
    run = tmp_path / "run"
    config = _exact_config(tmp_path, num_meta_iterations=2)
    res = runner.invoke(app, ["meta-train", "-c", str(config), "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert "training it in this process instead" in res.output
    assert "in a child process" not in res.output
    assert pretrained.load_pretrained(run) is not None
