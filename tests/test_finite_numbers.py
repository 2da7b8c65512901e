"""Numbers are checked finite where they enter and where they leave (issue #18, item 8).

Reproduction: `meta.lr: .inf` was accepted; the parameters became infinite, the run exited
0 and `evaluate` then printed MAML rows equal to buy-and-hold. Now every float of the config
must be finite, and a meta-update (or PPO update) that leaves a non-finite parameter stops
the run with one line naming the iteration, keeping the last good checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.meta.learner import MetaLearner
from metatrade.training.checkpoint import checkpoint_path, load_run_checkpoint

runner = CliRunner()
NAV = {
    "data": {"family": "nav2d"},
    "env": {"episode_length": 10},
    "policy": {"hidden_sizes": [8]},
    "meta": {"num_meta_iterations": 5, "meta_batch_size": 2, "episodes_per_task": 2},
    "run": {"checkpoint_interval": 2, "torch_threads": 1},
}


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("meta.lr", float("inf")),
        ("objective.risk", float("inf")),
        ("policy.init_log_std", float("nan")),
    ],
)
def test_a_non_finite_number_in_the_config_is_a_one_line_error(
    tmp_path: Path, key: str, value: float
) -> None:
    doc = copy.deepcopy(NAV)  # (before the fix: a seconds-long run that exited 0)
    node = doc
    *parents, leaf = key.split(".")
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value  # written as YAML's .inf / .nan / -.inf
    config = write(tmp_path / "bad.yaml", doc)
    res = runner.invoke(app, ["meta-train", "-c", str(config), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert f"{config}: {key}: expected a finite number (not inf or nan)" in message
    assert "Traceback" not in res.output and not checkpoint_path(tmp_path / "run").exists()


def test_non_finite_parameters_stop_the_run_keeping_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A meta-update that leaves an inf in the parameters at iteration 4 (injected after
    the real update) stops the run: exit 2, one line naming iteration 4, and the checkpoint
    holds iteration 3 (only in memory until then: written on the way out), all finite."""
    real_step = MetaLearner.step

    def diverging_step(self, *args, **kwargs):
        stats = real_step(self, *args, **kwargs)
        if self.iteration == 4:
            with torch.no_grad():
                next(iter(self.params.values())).fill_(float("inf"))
        return stats

    monkeypatch.setattr(MetaLearner, "step", diverging_step)
    run = tmp_path / "run"
    config = write(tmp_path / "nav.yaml", NAV)
    res = runner.invoke(app, ["meta-train", "-c", str(config), "--out", str(run), "--no-progress"])
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert "error: meta-training iteration 4 made parameters non-finite" in message
    assert f"the last good checkpoint {checkpoint_path(run)} (iteration 3) is kept" in message
    assert "Traceback" not in res.output
    _, state = load_run_checkpoint(run)
    assert state["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in state["learner"]["params"].values())
