"""``metatrade tune`` on configs/tiny.yaml: Optuna trials scored on validation only, every
trial in the registry, the best config written; ``metatrade trials`` lists them; a bad
search space is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.errors import ConfigError
from metatrade.evaluation.registry import TrialRegistry
from metatrade.training.config import load_config
from metatrade.training.tune import check_space, checkpoints, validation_tasks

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def test_tune_leaves_every_trial_in_the_registry_and_writes_the_best_config(
    tmp_path: Path,
) -> None:
    out = tmp_path / "tune"
    res = CliRunner().invoke(
        app, ["tune", "--config", str(TINY), "--n-trials", "3", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    reg = TrialRegistry(tmp_path / "trials.sqlite")  # beside the output folder
    found = reg.trials(kind="tune")
    assert len(found) == 3 and {t.split for t in found} == {"validation"}
    assert reg.count_trials(found[0].data_hash) == 3
    assert all(t.returns and t.metrics["n_obs"] == len(t.returns) for t in found)
    best = yaml.safe_load((out / "best.yaml").read_text())
    doc = json.loads((out / "tune.json").read_text())
    assert best["meta"]["inner_lr"] == pytest.approx(doc["best"]["meta.inner_lr"])
    assert 0.01 <= best["meta"]["inner_lr"] <= 1.0 and 0.001 <= best["meta"]["lr"] <= 0.1
    complete = [t for t in found if t.metrics["state"] == "complete"]
    assert max(t.metrics["objective"] for t in complete) == pytest.approx(doc["best_value"])
    listed = CliRunner().invoke(
        app, ["trials", "--registry", str(tmp_path / "trials.sqlite"), "--kind", "tune"]
    )
    assert listed.exit_code == 0 and "3 trial(s)" in listed.output
    assert "3 trial(s) in all, 0 look(s)" in listed.output


def test_tuning_reads_no_bar_of_the_test_split() -> None:
    cfg = load_config(TINY)
    tasks, _ = validation_tasks(cfg)
    for t in tasks:
        end = t.arrays.split_range("validation")[1]
        assert len(t.arrays) == end == t.raw.shape[0]
        assert t.arrays.split_range("test") == (end, end)  # empty
    assert checkpoints(4, 2) == [2, 4] and checkpoints(3, 5) == [1, 2, 3]


def test_a_bad_search_space_is_one_line(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY.read_text())
    raw["tune"]["space"] = {"meta.inner_lr": {"type": "categorical", "choices": ["fast"]}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="tune.space.meta.inner_lr: 'fast'"):
        check_space(load_config(bad))
    raw["tune"]["space"] = {"meta.inner_rate": {"type": "uniform", "low": 0.1, "high": 1}}
    bad.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["tune", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "meta.inner_rate" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
