"""The trial registry: trials and looks in one SQLite file, two writing processes at once,
the sealed test split, and the hashes that name a data set and a configuration."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import metatrade
from metatrade.errors import UserError
from metatrade.evaluation.registry import (
    TrialRegistry,
    config_hash,
    data_hash,
    registry_path,
    series_metrics,
)
from metatrade.evaluation.sealed import SealedSplitError, open_split
from walkforward_helpers import ar_task

METRICS = {"sharpe": 0.1, "n_obs": 40, "mean_return": 1e-4}


_WRITER = """
import sys, time
from pathlib import Path
from metatrade.evaluation.registry import TrialRegistry
path, worker, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
reg = TrialRegistry(path)
while not go.exists():  # start together, so that the writes overlap
    time.sleep(0.01)
for i in range(n):
    reg.record_trial(kind="tune", run=f"w{worker}", config_hash=f"c{i}", data_hash="d",
                     split="validation", seed=int(worker), label=f"w{worker}#{i}",
                     metrics={"sharpe": 0.01 * i, "n_obs": 40, "mean_return": 1e-4})
    reg.record_look(run=f"w{worker}", data_hash="d", split="test", command="x")
"""


def test_two_processes_append_at_once_and_every_trial_lands(tmp_path: Path) -> None:
    path, go = str(tmp_path / "trials.sqlite"), tmp_path / "go"
    src = str(Path(metatrade.__file__).parents[1])  # this checkout's package, not another
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, path, str(w), "60", str(go)], env=env)
        for w in (0, 1)
    ]
    TrialRegistry(path)
    go.touch()
    for p in procs:
        assert p.wait(timeout=180) == 0
    reg = TrialRegistry(path)
    assert reg.count_trials("d") == 120 and len(reg.looks("d", "test")) == 120
    assert {t.run for t in reg.trials(data_hash="d")} == {"w0", "w1"}
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_counts_filters_and_the_variance_of_the_trials_sharpe(tmp_path: Path) -> None:
    reg = TrialRegistry(tmp_path / "r.sqlite")
    srs = [0.05, -0.02, 0.11, float("nan")]
    for i, sr in enumerate(srs):
        reg.record_trial(
            kind="walkforward",
            run="runA",
            config_hash="c",
            data_hash="d1",
            split="validation" if i < 3 else "test",
            seed=0,
            label=f"MAML@k{i}",
            metrics={**METRICS, "sharpe": sr},
            returns={"2024-01-02": 0.01},
        )
    reg.record_trial(
        kind="tune",
        run="runB",
        config_hash="c",
        data_hash="d2",
        split="validation",
        seed=1,
        label="x",
        metrics=METRICS,
    )
    assert reg.count_trials("d1") == 4 and reg.count_trials("d1", split="test") == 1
    assert reg.count_trials("d2") == 1 and reg.count_trials("nothing") == 0
    assert reg.sharpe_variance("d1") == pytest.approx(np.var(srs[:3], ddof=1))
    assert np.isnan(reg.sharpe_variance("d2"))  # one trial: no variance
    got = reg.trials(data_hash="d1", split="validation", label="MAML@k2")
    assert len(got) == 1 and got[0].sharpe == pytest.approx(0.11)
    assert got[0].returns == {"2024-01-02": 0.01} and got[0].kind == "walkforward"
    assert [t.label for t in reg.trials(run="runB")] == ["x"]
    with pytest.raises(ValueError, match="metrics lack"):
        reg.record_trial(
            kind="tune",
            run="r",
            config_hash="c",
            data_hash="d",
            split="v",
            seed=0,
            label="x",
            metrics={"sharpe": 0.1},
        )
    with pytest.raises(ValueError, match="kind"):
        reg.record_trial(
            kind="guess",
            run="r",
            config_hash="c",
            data_hash="d",
            split="v",
            seed=0,
            label="x",
            metrics=METRICS,
        )


def test_test_split_is_refused_without_the_flag_and_each_look_is_recorded(tmp_path: Path) -> None:
    reg = TrialRegistry(tmp_path / "r.sqlite")
    kw = {"registry": reg, "run": "runs/x", "command": "metatrade walkforward", "data_hash": "d"}
    assert open_split("validation", final=False, **kw) == 0  # not sealed, nothing recorded
    with pytest.raises(SealedSplitError, match="pass --final") as err:
        open_split("test", final=False, **kw)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert reg.looks("d", "test") == []
    assert open_split("test", final=True, **kw) == 1
    assert open_split("test", final=True, **kw) == 2
    looks = reg.looks("d", "test")
    assert [lk.command for lk in looks] == ["metatrade walkforward"] * 2
    assert looks[0].run == "runs/x" and reg.looks("d", "validation") == []


def test_hashes_name_the_data_and_the_config() -> None:
    _, a = ar_task(0.3, n_bars=400, seed=1, name="SynA")
    _, b = ar_task(0.3, n_bars=400, seed=2, name="SynB")
    _, a2 = ar_task(0.3, n_bars=400, seed=1, name="SynA")
    assert data_hash([a.arrays, b.arrays]) == data_hash([b.arrays, a2.arrays])
    assert data_hash([a.arrays]) != data_hash([a.arrays, b.arrays])
    cfg = {"meta": {"inner_lr": 0.1}, "run": {"out_dir": "x", "seed": 0}}
    moved = {"meta": {"inner_lr": 0.1}, "run": {"out_dir": "y", "seed": 0}}
    other = {"meta": {"inner_lr": 0.2}, "run": {"out_dir": "x", "seed": 0}}
    ignore = ("run.out_dir",)
    assert config_hash(cfg, ignore=ignore) == config_hash(moved, ignore=ignore)
    assert config_hash(cfg, ignore=ignore) != config_hash(other, ignore=ignore)


def test_registry_path_and_series_metrics(tmp_path: Path) -> None:
    assert registry_path(tmp_path / "runs" / "demo-seed0") == tmp_path / "runs" / "trials.sqlite"
    assert registry_path("x", "elsewhere.sqlite") == Path("elsewhere.sqlite")
    m = series_metrics(np.array([0.01, -0.02, 0.03]))
    assert m["n_obs"] == 3 and m["mean_return"] == pytest.approx(0.02 / 3)
    assert m["sharpe"] == pytest.approx(
        np.mean([0.01, -0.02, 0.03]) / np.std([0.01, -0.02, 0.03], ddof=1)
    )
    assert np.isnan(series_metrics(np.zeros(5))["sharpe"])
    with pytest.raises(UserError, match="folder"):
        TrialRegistry(tmp_path)
