"""The sealed test split through the CLI (issue 21): `evaluate`, `walkforward`, `backtest` and
`signal` score validation by default and say so; asking for the test split without
`--final` is refused in one line and records nothing; with `--final` each read is a look in
the run's registry (run, time, command), and every table and file states the looks.
Every evaluate, walkforward, meta-train and train is a trial, and the walk-forward's DSR N
is the registry's count for its data set."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.evaluation.registry import TrialRegistry, data_hash
from metatrade.evaluation.walkforward import load_tasks
from metatrade.training.config import load_config
from metatrade.training.task_sets import eval_tasks, make_loader
from metatrade.training.walkforward import sealed_tasks

runner = CliRunner()
GEOMETRY = ["--fold-bars", "20", "--adapt-bars", "40"]


def invoke(*args: object):
    res = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny meta-train run (Finnifty:60 held out) with its PPO baseline, in a folder of
    its own (its registry: ``<folder>/trials.sqlite``)."""
    run = tmp_path_factory.mktemp("sealed") / "tiny"
    assert invoke("meta-train", "-c", "tiny", "--out", run, "-n", "2").exit_code == 0
    assert invoke("train", "-c", "tiny", "--out", run, "--timesteps", "128").exit_code == 0
    return run


def heldout_hash() -> str:
    cfg = load_config("tiny")
    loader = make_loader(cfg)
    return data_hash([loader.get_task_arrays(*t) for t in eval_tasks(cfg, loader)])


def refused(res) -> str:
    """The one `error:` line of a refused command (exit 2)."""
    assert res.exit_code == 2, res.output
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, res.output
    return errors[0]


# (command, how it asks for the test split without --final, the --final form, where it writes)
CASES = {
    "evaluate": ([], ["--final"]),  # evaluate has no other way to ask for test
    "walkforward": (["--from", "test", *GEOMETRY], ["--final", *GEOMETRY]),
    "backtest": (["--split", "test"], ["--final"]),
    "signal": (["--split", "test", *GEOMETRY], ["--final", *GEOMETRY]),
}


@pytest.mark.parametrize("command", ["walkforward", "backtest", "signal"])
def test_reading_test_without_final_is_refused_and_records_nothing(run: Path, command: str):
    registry = TrialRegistry(run.parent / "trials.sqlite")
    before = len(registry.looks(heldout_hash(), "test"))
    asked, _ = CASES[command]
    out = ["--out", run.parent / "x"] if command != "signal" else []
    line = refused(invoke(command, "--checkpoint", run, *out, *asked))
    assert "the test split is sealed" in line and "pass --final" in line
    assert len(registry.looks(heldout_hash(), "test")) == before


def test_final_with_a_validation_split_is_a_contradiction(run: Path) -> None:
    line = refused(invoke("backtest", "--checkpoint", run, "--split", "validation", "--final"))
    assert "--final scores the test split" in line


@pytest.mark.parametrize("command", ["evaluate", "walkforward", "backtest", "signal"])
def test_a_final_look_is_recorded_and_stated(run: Path, tmp_path: Path, command: str) -> None:
    registry = TrialRegistry(run.parent / "trials.sqlite")
    dhash = heldout_hash()
    before = len(registry.looks(dhash, "test"))
    _, final = CASES[command]
    out = ["--out", tmp_path] if command != "signal" else []
    res = invoke(command, "--checkpoint", run, *out, *final, "--format", "json")
    assert res.exit_code == 0, res.output
    looks = registry.looks(dhash, "test")
    assert len(looks) == before + 1  # one look, in the run's registry whatever --out says
    assert looks[-1].command.startswith(f"metatrade {command}") and looks[-1].split == "test"
    assert looks[-1].run in (str(tmp_path), str(run))
    rows = json.loads(res.stdout[res.stdout.index("[") :])
    assert {r["split"] for r in rows} == {"test"}
    assert {r["test_looks"] for r in rows} == {before + 1}


def test_validation_by_default_and_every_output_says_so(run: Path, tmp_path: Path) -> None:
    registry = TrialRegistry(run.parent / "trials.sqlite")
    dhash = heldout_hash()
    looks = len(registry.looks(dhash, "test"))
    res = invoke("evaluate", "--checkpoint", run, "--out", tmp_path / "e")
    assert res.exit_code == 0, res.output
    assert "scored on the validation split; the test period is sealed" in res.output
    assert f"looked at {looks} time(s)" in res.output
    doc = json.loads((tmp_path / "e" / "eval" / "evaluation.json").read_text())
    assert doc["period"] == {
        "split": "validation",
        "final": False,
        "data_hash": dhash,
        "test_looks": looks,
    }
    assert set(pd.read_csv(tmp_path / "e" / "eval" / "evaluation.csv").split) == {"validation"}
    res = invoke("backtest", "--checkpoint", run, "--out", tmp_path / "b")
    assert res.exit_code == 0 and "Split: validation" in res.output
    report = (tmp_path / "b" / "reports" / "Finnifty_60" / "report.txt").read_text()
    assert f"the test period is sealed (looked at {looks} time(s)" in report
    assert len(registry.looks(dhash, "test")) == looks  # nothing read test


def test_the_validation_walk_reads_no_test_bar() -> None:
    cfg = load_config("tiny")
    loader = make_loader(cfg)
    whole = load_tasks(loader, eval_tasks(cfg, loader))
    cut, split = sealed_tasks(whole, "validation", final=False)
    end = whole[0].arrays.split_range("validation")[1]
    assert split == "validation" and len(cut[0]) == end < len(whole[0])
    assert sealed_tasks(whole, "validation", final=True)[1] == "validation+test"
    assert sealed_tasks(whole, "test", final=True) == (whole, "test")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def test_dsr_n_is_the_registry_count_and_the_page_states_n_pbo_and_looks(
    run: Path, tmp_path: Path
) -> None:
    """Every command is a trial; the walk-forward's N is the registry's count on its data
    set (the evaluate rows and earlier walks included), and its HTML page states N, PBO and
    the looks at the test period."""
    registry = TrialRegistry(run.parent / "trials.sqlite")
    dhash = heldout_hash()
    kinds = {t.kind for t in registry.trials()}
    assert {"meta-train", "train"} <= kinds  # the fixture's two training runs
    assert invoke("evaluate", "--checkpoint", run, "--out", tmp_path / "e").exit_code == 0
    evaluated = registry.trials(data_hash=dhash, kind="evaluate", run=tmp_path / "e")
    assert {t.label for t in evaluated} == {
        f"{s}@k{k}" for s in ("MAML", "PPO", "random") for k in (0, 1)
    }
    assert all(t.metrics["period"] == "window" and t.split == "validation" for t in evaluated)
    out = tmp_path / "wf"
    res = invoke("walkforward", "--checkpoint", run, "--out", out, *GEOMETRY)
    assert res.exit_code == 0, res.output
    pooled = json.loads((out / "walkforward.json").read_text())["scopes"]["pooled"]["trials"]
    count = registry.count_trials(dhash)
    assert pooled["n_trials"] == count and pooled["data_hash"] == dhash
    assert pooled["split"] == "validation"
    page = _Text()
    page.feed((out / "walkforward.html").read_text())
    text = " ".join(page.chunks)
    looks = len(registry.looks(dhash, "test"))
    assert f"N = {count} ({count} trial(s) on this data set" in text
    assert re.search(r"PBO \(CSCV, Bailey et al\. 2017\): (\d\.\d\d|nan) over \d+ trials", text)
    assert f"looks at the test period of this data set (recorded): {looks}" in text
    assert "scored on the validation split" in text


def test_seeds_run_per_seed_and_pool(tmp_path: Path) -> None:
    """`meta-train --seeds 0 1 --out X` writes X-seed0 and X-seed1; `evaluate` and
    `walkforward --checkpoint X --seeds 0 1` find them, and the pooled report holds each
    seed's own figure, their spread and the pooled one."""
    base = tmp_path / "x"
    res = invoke("meta-train", "-c", "tiny", "--seeds", "0", "1", "--out", base, "-n", "1")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x-seed0").is_dir() and (tmp_path / "x-seed1").is_dir()
    res = invoke("evaluate", "--checkpoint", base, "--seeds", "0", "1")
    assert res.exit_code == 0, res.output
    pooled = pd.read_csv(tmp_path / "x-seeds" / "evaluation_seeds.csv").set_index("row")
    for seed in (0, 1):
        own = pd.read_csv(tmp_path / f"x-seed{seed}" / "eval" / "evaluation.csv")
        maml = own[(own.method == "MAML") & (own.k == 1)].return_mean.item()
        assert pooled.loc["MAML@k1", f"seed_{seed}"] == pytest.approx(100 * maml)
    row = pooled.loc["MAML@k1"]
    assert row.pooled == pytest.approx((row.seed_0 + row.seed_1) / 2)
    assert row.spread_sd == pytest.approx(abs(row.seed_0 - row.seed_1) / 2**0.5)
    res = invoke(
        "walkforward",
        "--checkpoint",
        tmp_path / "x-seed1",
        "--seeds",
        "0",
        "1",
        *GEOMETRY,
        "--format",
        "json",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "x-seeds" / "walkforward_seeds.json").read_text())
    for seed in (0, 1):
        own = json.loads(
            (tmp_path / f"x-seed{seed}" / "walkforward" / "walkforward.json").read_text()
        )
        sharpe = own["scopes"]["pooled"]["metrics"]["MAML@k1"]["sharpe"]
        assert doc["rows"]["MAML@k1"]["per_seed"][str(seed)] == pytest.approx(sharpe, rel=1e-6)
    refused_line = refused(invoke("evaluate", "--checkpoint", base, "--seeds", "0", "7"))
    assert "x-seed7" in refused_line and "meta-train --seeds 0 7" in refused_line
    assert "--seed and --seeds" in refused(
        invoke("evaluate", "--checkpoint", base, "--seeds", "0", "--seed", "1")
    )
