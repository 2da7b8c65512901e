"""A run's artefacts belong to the run (issue #18, items 1, 6 and 9).

Reproductions: `evaluate --out DIR` dropped the pretrained row (it looked for
`pretrained/params.pt` under DIR), and with DIR another run it used that run's start;
`meta-train --overwrite` left the replaced run's `ppo/`, `pretrained/` and `walkforward/`
in place, to be loaded against the new run; `pretrained/params.pt` had no content hash
(flipped bytes: a `UnicodeDecodeError` traceback); the resume check ignored `objective`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from metatrade.agents.checkpoint import CheckpointError
from metatrade.cli import app
from metatrade.training.artefacts import (
    PRETRAINED_FILE,
    RUN_FILE,
    read_run_id,
    resolve_run,
    run_id_for,
)
from metatrade.training.build import make_family
from metatrade.training.checkpoint import checkpoint_path, load_run_checkpoint, save_run_checkpoint
from metatrade.training.config import load_config
from metatrade.training.pretrained import save_pretrained
from metatrade.training.trainer import Trainer

runner = CliRunner()
# tiny, one iteration, and an evaluation of the MAML and pretrained rows at k = 0 only
FAST = {
    "meta.num_meta_iterations": 1,
    "evaluation.adaptation_steps": [0],
    "evaluation.test_episodes": 2,
    "evaluation.bootstrap_samples": 20,
    "evaluation.baselines": ["maml", "pretrained"],
}


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def make_run(out: Path) -> Path:
    """A one-iteration tiny run with a pretrained start (its meta-parameters)."""
    torch.set_num_threads(1)
    cfg = load_config("tiny", out_dir=out, overrides=FAST)
    trainer = Trainer(make_family(cfg), None, config=cfg, run_dir=out, progress=False)
    trainer.meta_train()
    save_pretrained(out, trainer.params, run_id=trainer.run_id)
    return out


def another_run(source: Path, out: Path) -> Path:
    """A second run (its own run id) with the same checkpoint and a shifted pretrained start."""
    cfg, state = load_run_checkpoint(source)
    run_id = run_id_for(out)  # a new directory: a new run id
    save_run_checkpoint(
        checkpoint_path(out),
        "MetaTrainer",
        cfg,
        state["iteration"],
        state["learner"],
        state["rng"],
        extra=state["extra"],
        run_id=run_id,
    )
    shifted = {k: v + 0.5 for k, v in state["learner"]["params"].items()}
    save_pretrained(out, shifted, run_id=run_id)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    a = make_run(root / "A")
    return a, another_run(a, root / "B")


def pretrained_rows(folder: Path) -> pd.DataFrame:
    table = pd.read_csv(folder / "eval" / "evaluation.csv")
    return table[table.method == "pretrained"].reset_index(drop=True)


def test_evaluate_out_keeps_the_runs_own_pretrained_row(runs, tmp_path: Path) -> None:
    """`evaluate --out E` (an empty folder) dropped the pretrained row; `--out B` (another
    run) evaluated B's pretrained start. Both now evaluate A's own start, identically."""
    a, b = runs
    empty = tmp_path / "E"
    assert invoke("evaluate", "--checkpoint", a, "--out", empty).exit_code == 0
    into_b = invoke("evaluate", "--checkpoint", a, "--out", b)
    assert into_b.exit_code == 0, into_b.output
    mine, there = pretrained_rows(empty), pretrained_rows(b)
    assert len(mine) == 1
    pd.testing.assert_frame_equal(mine, there)
    record = (b / "eval" / "provenance.json").read_text()
    assert read_run_id(a) in record and read_run_id(b) not in record
    shutil.rmtree(b / "eval")


def test_an_artefact_of_another_run_is_refused(runs, tmp_path: Path) -> None:
    """B's pretrained start copied into A (what a replaced run used to leave behind) was
    used silently; now every command refuses it in one line naming both runs."""
    a, b = runs
    run = tmp_path / "A"
    shutil.copytree(a, run)
    shutil.copy(b / PRETRAINED_FILE, run / PRETRAINED_FILE)
    for command in (["evaluate"], ["walkforward", "--fold-bars", "10", "--adapt-bars", "40"]):
        res = invoke(*command, "--checkpoint", run, "--out", tmp_path / "x")
        assert res.exit_code == 2, res.output
        message = " ".join(res.output.split())
        assert "belongs to another run" in message and read_run_id(b) in message
    with pytest.raises(CheckpointError, match="belongs to another run"):
        resolve_run(run)
    # a checkpoint of B in A's checkpoints folder is refused too
    shutil.copy(b / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=f"{run} holds run {read_run_id(a)}"):
        resolve_run(run)


def test_meta_train_overwrite_moves_the_whole_replaced_run_aside(runs, tmp_path: Path) -> None:
    """After `meta-train --overwrite` the old ppo/, pretrained/ and walkforward/ stayed and
    were loaded ("PPO baseline already trained: loaded"). Now the whole old run moves to
    <run>.replaced-<time>/ (said in the output) and the new run has a new run id."""
    a, _ = runs
    run = tmp_path / "R"
    shutil.copytree(a, run)
    (run / "ppo").mkdir()
    (run / "walkforward").mkdir()
    (run / "walkforward" / "walkforward.csv").write_text("old\n")
    (run / "notes.txt").write_text("the user's own file")
    old_id = read_run_id(run)
    res = invoke(
        "meta-train", "-c", "tiny", "--out", run, "-n", "1", "--overwrite", "--no-progress"
    )
    assert res.exit_code == 0, res.output
    [aside] = list(tmp_path.glob("R.replaced-*"))
    assert f"moved to {aside}" in " ".join(res.output.split())
    for name in ("ppo", "pretrained", "walkforward", "logs", RUN_FILE):
        assert (aside / name).exists()
    assert not (run / "ppo").exists() and not (run / "pretrained").exists()
    assert not (run / "walkforward").exists()
    assert (run / "notes.txt").read_text() == "the user's own file"  # not the run's: stays
    assert read_run_id(aside) == old_id != read_run_id(run)
    assert load_run_checkpoint(run)[1]["run_id"] == read_run_id(run)
    assert resolve_run(run).pretrained is None and resolve_run(run).ppo is None


def test_pretrained_start_is_hash_checked(runs, tmp_path: Path) -> None:
    """Flipped bytes in pretrained/params.pt gave a UnicodeDecodeError traceback, and
    changed weights were used silently: now both are a one-line content-hash error."""
    a, _ = runs
    run = tmp_path / "A"
    shutil.copytree(a, run)
    path = run / PRETRAINED_FILE
    data = bytearray(path.read_bytes())
    weights = torch.load(path, weights_only=True)["state"]["params"]
    raw = max(weights.values(), key=torch.numel).numpy().tobytes()
    at = data.find(raw)
    data[at : at + 64] = bytes(b ^ 0xFF for b in data[at : at + 64])
    path.write_bytes(bytes(data))
    res = invoke("evaluate", "--checkpoint", run, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "content hash mismatch" in res.output, res.output


def test_resume_with_another_objective_is_refused(runs) -> None:
    """A changed `objective.risk` resumed and diverged; the resume check now compares every
    section that changes the run's mathematics."""
    a, _ = runs
    cfg = load_config("tiny", out_dir=a, overrides={**FAST, "objective.risk": 0.5})
    trainer = Trainer(make_family(cfg), None, config=cfg, run_dir=a, progress=False)
    with pytest.raises(CheckpointError, match=r"objective\.risk"):
        trainer.meta_train(num_meta_iterations=2, resume=a)
