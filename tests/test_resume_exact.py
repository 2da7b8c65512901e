"""Exact resume for every meta-optimizer and for PPO (issue #11, items 2 and 3).

kill -9 in the middle of ``meta-train`` then ``meta-train --resume`` ends with parameters
bitwise equal to an uninterrupted run, for Adam, TRPO with ``cg_subsample 0.25`` (before
the fix its Fisher subset came from the learner's own generator, neither the trainer's nor
saved, so a resumed run diverged) and ProMP. Ctrl-C in ``train`` saves the last completed
PPO iteration, prints a ``train --resume`` command that exists, and that command continues
bit for bit (env state, observations and optimizer included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.training.checkpoint import PPO_DIR, checkpoint_path, load_run_checkpoint

runner = CliRunner()
ENTRY = "from metatrade.cli import app; app()"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

# 2D navigation, tiny: well under 0.1 s per meta-iteration on one thread.
NAV_TINY = {
    "data": {"family": "nav2d"},
    "env": {"episode_length": 10},
    "policy": {"hidden_sizes": [8]},
    "meta": {
        "num_meta_iterations": 12,
        "meta_batch_size": 3,
        "episodes_per_task": 4,
        "num_evaluation_episodes": 2,
        "lr": 0.05,
    },
    "run": {"checkpoint_interval": 1, "torch_threads": 1},
}
OPTIMIZERS = {
    "adam": {"optimizer": "adam"},
    "trpo-cg_subsample-0.25": {"optimizer": "trpo", "cg_subsample": 0.25, "cg_iters": 3},
    "promp": {"optimizer": "promp", "promp_steps": 2},
    "adam-linear-schedule": {"optimizer": "adam", "lr_schedule": "linear"},
}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def write_config(path: Path, **sections: dict) -> Path:
    doc = {k: dict(v) for k, v in NAV_TINY.items()}
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    path.write_text(yaml.safe_dump(doc))
    return path


def uninterrupted(config: Path, out: Path, kind: str, timesteps: int | None = None) -> None:
    """The same run in this process, never stopped (same code path, same single thread)."""
    from metatrade.training.build import make_family, multitask_env
    from metatrade.training.config import load_config
    from metatrade.training.trainer import Trainer

    torch.set_num_threads(1)
    cfg = load_config(config, out_dir=out)
    family = make_family(cfg)
    if kind == "meta":
        Trainer(family, None, config=cfg, run_dir=out, progress=False).meta_train()
    else:
        env = multitask_env(cfg, family)
        Trainer(env, None, config=cfg, run_dir=out, progress=False).train(timesteps)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_kill_9_mid_meta_train_then_resume_is_bitwise_equal(tmp_path: Path, optimizer: str) -> None:
    """kill -9 mid-run, then `meta-train --resume`: final parameters, optimizer state and RNG
    streams bitwise equal to an uninterrupted run (Adam, TRPO cg_subsample 0.25, ProMP)."""
    config = write_config(tmp_path / "nav.yaml", meta=OPTIMIZERS[optimizer])
    killed, full = tmp_path / "killed", tmp_path / "full"
    cmd = [sys.executable, "-c", ENTRY, "meta-train", "--config", str(config), "--no-progress"]
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=ENV, stdout=subprocess.DEVNULL)
    wait_for(checkpoint_path(killed), proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    _, state = load_run_checkpoint(killed)  # the last checkpoint survived intact
    assert 1 <= state["iteration"] < 12

    resumed = runner.invoke(app, ["meta-train", "--out", str(killed), "--resume", "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    uninterrupted(config, full, "meta")

    _, a = load_run_checkpoint(killed)
    _, b = load_run_checkpoint(full)
    assert a["iteration"] == b["iteration"] == 12
    for name, value in b["learner"]["params"].items():
        assert torch.equal(a["learner"]["params"][name], value), name
    assert str(a["learner"]["optimizer"]) == str(b["learner"]["optimizer"])
    for name, value in b["rng"].items():
        assert str(a["rng"][name]) == str(value)


def test_the_linear_schedule_falls_to_lr_over_the_iterations(tmp_path: Path) -> None:
    """meta.lr_schedule: linear: iteration t (1-based) of T steps at lr x (1 - (t-1)/T), so
    the last at lr / T; the constant schedule keeps lr and gives other parameters."""
    finals = {}
    for schedule in ("linear", "constant"):
        meta = {"optimizer": "adam", "lr_schedule": schedule}
        config = write_config(tmp_path / f"{schedule}.yaml", meta=meta)
        uninterrupted(config, tmp_path / schedule, "meta")
        _, state = load_run_checkpoint(tmp_path / schedule)
        group = state["learner"]["optimizer"]["param_groups"][0]
        assert group["lr"] == pytest.approx(0.05 / 12 if schedule == "linear" else 0.05)
        finals[schedule] = state["learner"]["params"]
    assert any(not torch.equal(finals["linear"][k], v) for k, v in finals["constant"].items())


def test_ctrl_c_in_train_saves_and_train_resume_continues_bitwise(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) in `train`: exit 130, the last completed PPO iteration is saved, the
    printed `metatrade train --resume --out R` works and ends bitwise where an uninterrupted
    run does (before: the PPO run kept no checkpoint until the end and had no --resume)."""
    ppo = {"total_timesteps": 10**7, "n_steps": 16, "episodes_per_task": 2}
    ppo |= {"tasks_per_batch": 2, "num_minibatches": 2, "update_epochs": 2}
    config = write_config(tmp_path / "nav.yaml", ppo=ppo, run={"checkpoint_interval": 4})
    run, full = tmp_path / "run", tmp_path / "full"
    cmd = [sys.executable, "-c", ENTRY, "train", "-c", str(config), "--out", str(run)]
    proc = subprocess.Popen(
        [*cmd, "--no-progress"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(checkpoint_path(run / PPO_DIR), proc)
    time.sleep(0.3)  # mid-way between two periodic checkpoints, most likely
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    message = " ".join(err.split())
    assert f"continue with: metatrade train -c {config} --resume --out {run}" in message
    _, state = load_run_checkpoint(checkpoint_path(run / PPO_DIR))
    stopped = state["iteration"]
    assert f"iterations 1-{stopped} of" in message

    per_iteration = 16 * 2 * 2  # n_steps x tasks x episodes
    budget = (stopped + 3) * per_iteration
    res = runner.invoke(
        app, ["train", "--out", str(run), "--resume", "--timesteps", str(budget), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    uninterrupted(config, full, "ppo", timesteps=budget)

    a = torch.load(run / PPO_DIR / "checkpoints" / "ppo.pt", weights_only=True)["state"]
    b = torch.load(full / PPO_DIR / "checkpoints" / "ppo.pt", weights_only=True)["state"]
    assert a["num_timesteps"] == b["num_timesteps"] == budget
    for net in ("policy", "value"):
        for name, value in b[net].items():
            assert torch.equal(a[net][name], value), f"{net}.{name}"
    assert torch.equal(a["generator"], b["generator"])
