"""Ctrl-C and a full disk in the run-directory machinery (issue #18, item 12).

Reproductions: four quick Ctrl-Cs in `meta-train` printed a traceback (the second one cut
the save of the last completed iteration short); the resume command printed after Ctrl-C
left out --seed, --data and --tasks and failed when run as printed; a full disk during a
checkpoint write was a traceback.
"""

from __future__ import annotations

import errno
import os
import shlex
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
from metatrade.training.checkpoint import checkpoint_path, load_run_checkpoint

runner = CliRunner()
NAV = {
    "data": {"family": "nav2d"},
    "env": {"episode_length": 10},
    "policy": {"hidden_sizes": [32]},
    "meta": {"num_meta_iterations": 8, "meta_batch_size": 2, "episodes_per_task": 2},
    "run": {"checkpoint_interval": 1000, "torch_threads": 1},  # saved in memory, then on exit
}


def test_four_quick_ctrl_cs_then_the_printed_command_resumes(tmp_path: Path) -> None:
    """Four SIGINTs 20 ms apart (the first stops the run; the others land in the save of the
    last completed iteration, the way out, or the interpreter's exit): exit 130, no
    traceback, every iteration shown as done saved whole (no temporary file left), and the
    printed command, run as printed (here in-process), continues the run with its seed."""
    config = tmp_path / "nav.yaml"
    config.write_text(yaml.safe_dump(NAV))
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-c",
        "from metatrade.cli import app; app()",
        "meta-train",
        "-c",
        str(config),
        "--seed",
        "3",
        "--out",
        str(run),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while " 2/8 " not in proc.stderr.readline():  # two iterations done (summary lines)
        assert proc.poll() is None, proc.stderr.read()
    for _ in range(4):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    _, state = load_run_checkpoint(run)
    stopped = state["iteration"]
    assert 2 <= stopped < 8 and not list(run.rglob("*.tmp"))
    message = " ".join(err.split())
    assert f"iterations 1-{stopped} of 8 are saved" in message
    line = next(x for x in err.splitlines() if "continue with: " in x)
    printed = shlex.split(line.split("continue with: ")[1])
    assert printed[:2] == ["metatrade", "meta-train"] and "--seed" in printed
    torch.set_num_threads(1)
    res = runner.invoke(app, printed[1:])
    assert res.exit_code == 0, res.output
    cfg, state = load_run_checkpoint(run)
    assert state["iteration"] == 8 and cfg.run.seed == 3


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write of iteration 2's checkpoint fails with ENOSPC: exit 2, one line naming the
    checkpoint and the kept iteration, the old checkpoint intact, no temporary file left."""
    config = tmp_path / "nav.yaml"
    config.write_text(yaml.safe_dump({**NAV, "run": {"checkpoint_interval": 1}}))
    run = tmp_path / "run"
    real_save = torch.save
    calls = []

    def disk_full_on_second_checkpoint(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_on_second_checkpoint)
    res = runner.invoke(app, ["meta-train", "-c", str(config), "--out", str(run), "--no-progress"])
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert (
        f"error: could not write checkpoint {checkpoint_path(run)} for iteration 2 (No space "
        "left on device); the previous checkpoint is intact (iteration 1)"
    ) in message
    assert load_run_checkpoint(run)[1]["iteration"] == 1
    assert not list(run.rglob("*.tmp"))
