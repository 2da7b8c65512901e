"""Run directories are never silently overwritten (issue #11, item 1).

Each test names the reproduction from the issue: two writers of one run directory, a fresh
meta-train over a 300-iteration checkpoint, `train` truncating the meta-training log,
a logger dropping late columns, stray ``*.tmp`` files of interrupted writes.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.io import LOCK_NAME, atomic_write_text, run_dir_lock
from metatrade.training.build import make_family, multitask_env
from metatrade.training.checkpoint import PPO_DIR, checkpoint_path, load_run_checkpoint
from metatrade.training.config import load_config
from metatrade.training.logger import MetricsLogger
from metatrade.training.trainer import Trainer

runner = CliRunner()
NAV = {
    "data": {"family": "nav2d"},
    "env": {"episode_length": 10},
    "policy": {"hidden_sizes": [8]},
    "meta": {"num_meta_iterations": 3, "meta_batch_size": 2, "episodes_per_task": 2},
    "ppo": {"n_steps": 10, "episodes_per_task": 2, "tasks_per_batch": 2},
    "run": {"checkpoint_interval": 1, "torch_threads": 1},
}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def nav_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "nav.yaml"
    path.write_text(yaml.safe_dump(NAV))
    return path


def meta_train(*args: object):
    return runner.invoke(app, ["meta-train", "--no-progress", *map(str, args)])


def test_two_concurrent_writers_of_one_out_the_second_is_refused(
    nav_yaml: Path, tmp_path: Path
) -> None:
    """Two `meta-train --out R` at once both exited 0 and interleaved metrics.csv (130
    duplicated iterations); now the second exits non-zero naming the holder's pid and R,
    and writes nothing into R."""
    run = tmp_path / "R"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        res = meta_train("-c", nav_yaml, "--out", run)
        assert res.exit_code != 0
        message = " ".join(res.output.split())
        assert f"run directory {run} is being written by another metatrade process" in message
        assert f"pid {holder.pid}" in message
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    finally:
        holder.communicate("done\n", timeout=30)
    assert meta_train("-c", nav_yaml, "--out", run).exit_code == 0  # released: R is usable


HOLD_LOCK = """
import sys
from metatrade.io import run_dir_lock
with run_dir_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_meta_train_over_a_checkpoint_needs_resume_or_overwrite(
    nav_yaml: Path, tmp_path: Path
) -> None:
    """`meta-train` into a directory holding a checkpoint, without --resume, replaced it
    silently; now it refuses (checkpoint untouched) unless --overwrite, which starts over."""
    run = tmp_path / "R"
    assert meta_train("-c", nav_yaml, "--out", run).exit_code == 0
    before = checkpoint_path(run).read_bytes()
    res = meta_train("-c", nav_yaml, "--out", run, "-n", "2")
    assert res.exit_code == 2
    message = " ".join(res.output.split())
    assert "already holds a meta-training run" in message and "--resume" in message
    assert checkpoint_path(run).read_bytes() == before
    res = meta_train("-c", nav_yaml, "--out", run, "-n", "2", "--overwrite")
    assert res.exit_code == 0, res.output
    _, state = load_run_checkpoint(run)
    assert state["iteration"] == 2
    rows = list(csv.DictReader((run / "logs" / "metrics.csv").open()))
    assert [r["iteration"] for r in rows] == ["1", "2"]


def test_train_and_meta_train_with_one_config_keep_their_own_files(tmp_path: Path) -> None:
    """`train` after `meta-train` with the same config truncated the meta-training
    metrics.csv and wrote empty rows under its header; now PPO owns <run>/ppo."""
    cfg = load_config(overrides={f"{s}.{k}": v for s, d in NAV.items() for k, v in d.items()})
    family = make_family(cfg)
    Trainer(family, None, config=cfg, run_dir=tmp_path, progress=False).meta_train()
    meta_log = (tmp_path / "logs" / "metrics.csv").read_text()
    env = multitask_env(cfg, family)
    Trainer(env, None, config=cfg, run_dir=tmp_path, progress=False).train(total_timesteps=200)
    assert (tmp_path / "logs" / "metrics.csv").read_text() == meta_log
    assert load_run_checkpoint(tmp_path, "MetaTrainer")[1]["iteration"] == 3
    ppo_rows = list(csv.DictReader((tmp_path / PPO_DIR / "logs" / "metrics.csv").open()))
    assert len(ppo_rows) == 5 and all(r["train/policy_loss"] for r in ppo_rows)
    assert (tmp_path / PPO_DIR / "checkpoints" / "ppo.pt").is_file()


def test_csv_logger_keeps_a_column_that_first_appears_later(tmp_path: Path) -> None:
    """The CSV's columns were fixed by the first row: a metric first logged later was
    dropped. Now the header widens (rewritten atomically) and earlier rows leave it empty."""
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(1, {"meta/loss": 0.5})
    logger.log(2, {"meta/loss": 0.25, "meta/skipped": 1.0})
    logger.log(3, {"meta/loss": 0.125})
    logger.close()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["meta/skipped"] for r in rows] == ["", "1.0", ""]
    assert [r["meta/loss"] for r in rows] == ["0.5", "0.25", "0.125"]


def test_stray_tmp_files_of_interrupted_writes_are_cleaned_at_next_start(tmp_path: Path) -> None:
    """A kill during an atomic write left `.last.pt.<random>.tmp` behind for ever; taking
    the run directory's lock deletes such files, but not those of a nested run (ppo/) that
    has its own lock and may be writing right now."""
    atomic_write_text(tmp_path / "checkpoints" / "last.pt", "kept")
    stray = tmp_path / "checkpoints" / ".last.pt.a1b2c3d4.tmp"
    stray.write_text("half a checkpoint")
    nested = tmp_path / PPO_DIR / "checkpoints" / ".last.pt.x9y8w7v6.tmp"
    nested.parent.mkdir(parents=True)
    nested.write_text("being written")
    (tmp_path / PPO_DIR / LOCK_NAME).write_text("")
    users = tmp_path / "notes.tmp"  # not the name of an atomic write's temporary file
    users.write_text("mine")
    with run_dir_lock(tmp_path):
        assert not stray.exists() and nested.exists() and users.exists()
        assert (tmp_path / "checkpoints" / "last.pt").read_text() == "kept"
    with run_dir_lock(tmp_path / PPO_DIR):
        assert not nested.exists()


def test_lock_is_reentrant_in_one_process_and_released_after(tmp_path: Path) -> None:
    with run_dir_lock(tmp_path):
        with run_dir_lock(tmp_path):  # the CLI and the Trainer it calls both take it
            pass
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    code = f"from metatrade.io import run_dir_lock\nwith run_dir_lock({str(tmp_path)!r}): pass"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)  # free again


def test_a_refused_command_leaves_no_folder_behind(tmp_path: Path) -> None:
    """Reproduction: a command refused after taking the lock of its --out (a test split
    without --final, a bad option) left an empty folder holding only .lock. A folder the lock
    created and nothing wrote into is removed on release; one that was there, or that got a
    file, stays."""
    fresh = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), run_dir_lock(fresh):
        raise RuntimeError("refused")
    assert not fresh.exists()
    with run_dir_lock(fresh):
        (fresh / "result.csv").write_text("x\n")
    assert (fresh / "result.csv").is_file()
    existing = tmp_path / "existing"
    existing.mkdir()
    with run_dir_lock(existing):
        pass
    assert existing.is_dir()
