"""Issue #11 item 7: inputs are checked where they enter (data files, task names, config,
the PPO baseline), and the CLI tells user errors (one line) from bugs (a traceback)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from instrument_helpers import describe_instruments
from metatrade.cli import app
from metatrade.data.loader import SAMPLE_DIR, DataLoader
from metatrade.data.validation import DataValidationError, validate_folder
from metatrade.errors import ConfigError, DataWarning

runner = CliRunner()
T0 = 1_704_079_800  # 2024-01-01 09:00 IST... as epoch seconds (a Monday morning)


def bars_csv(path: Path, n: int, minutes: int, *, start: str = "2024-01-01 09:15") -> Path:
    """n bars ``minutes`` apart inside 09:15-15:30 sessions on weekdays, as epoch seconds."""
    per_day = 375 // minutes
    days = pd.bdate_range(start[:10], periods=n // per_day + 2)
    stamps = [
        pd.Timestamp(f"{d.date()} 09:15", tz="Asia/Kolkata") + pd.Timedelta(minutes=minutes * i)
        for d in days
        for i in range(per_day)
    ][:n]
    price = 100 + (pd.Series(range(n)) % 7) * 0.1
    pd.DataFrame(
        {
            "datetime": [int(t.timestamp()) for t in stamps],
            "open": price,
            "high": price + 0.5,
            "low": price - 0.5,
            "close": price + 0.1,
        }
    ).to_csv(path, index=False)
    return path


def good_folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(SAMPLE_DIR / f"{name}.parquet", folder)
    return folder


def test_data_validate_reports_a_file_too_short_for_one_observation(tmp_path: Path) -> None:
    """Reproduction: `data validate` said OK for a 60-bar file, then `data list` failed for the
    whole folder with a wrong bar count."""
    folder = good_folder(tmp_path, "Nifty_60")
    describe_instruments(folder)
    bars_csv(folder / "Short_15.csv", 60, 15)
    res = runner.invoke(app, ["data", "validate", str(folder)])
    assert res.exit_code == 1 and "too short" in res.output and "Short_15.csv" in res.output
    res = runner.invoke(app, ["data", "list", "--data", str(folder)])
    assert res.exit_code == 0, res.output
    assert "Nifty:60" in res.output and "skipped" in res.output and "Short_15.csv" in res.output


def test_bar_spacing_is_checked_against_the_file_name(tmp_path: Path) -> None:
    """Reproduction: a 5-minute file named `_15` validated as OK."""
    path = bars_csv(tmp_path / "Nifty_15.csv", 300, 5)
    [problem] = validate_folder(path)
    assert "5 minutes apart" in problem.message and "Nifty_5.csv" in problem.message


def test_timestamps_before_1990_or_in_the_future_name_the_unit_mix_up(tmp_path: Path) -> None:
    """Reproduction: a row in epoch milliseconds among epoch seconds (read ~50,000 years
    ahead) and a 1985 date were accepted."""
    path = bars_csv(tmp_path / "Nifty_15.csv", 300, 15)
    df = pd.read_csv(path).astype({"datetime": "int64"})
    df.loc[10, "datetime"] *= 1000  # milliseconds
    df.loc[20, "datetime"] = 473_385_600  # 1985-01-01
    df.to_csv(path, index=False)
    problems = {p.row: p.message for p in validate_folder(path)}
    assert "in the future" in problems[11] and "milliseconds read as seconds" in problems[11]
    assert "before 1990" in problems[21]


def test_one_bad_file_does_not_stop_data_list_or_training(tmp_path: Path) -> None:
    """Reproduction: one unreadable file among good ones stopped `data list` and training."""
    folder = good_folder(tmp_path, "Nifty_60", "Bank_Nifty_60", "Finnifty_60")
    describe_instruments(folder)
    (folder / "Broken_5.csv").write_text("datetime,open,high,low,close\nyesterday,1,2,0,1\n")
    res = runner.invoke(app, ["data", "list", "--data", str(folder)])
    assert res.exit_code == 0 and "Broken_5.csv" in res.output and "3 tasks" in res.output
    res = runner.invoke(app, ["data", "list", "--data", str(folder), "--strict"])
    assert res.exit_code == 2 and "Broken_5.csv" in res.output
    with pytest.warns(DataWarning, match="Broken_5.csv"):
        assert len(DataLoader(folder, cache_dir=False).get_available_tasks()) == 3
    out = tmp_path / "run"
    args = ["meta-train", "-c", "tiny", "--data", str(folder), "-n", "1", "--out", str(out)]
    res = runner.invoke(app, [*args, "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--strict"])
    assert res.exit_code == 2 and "Broken_5.csv" in res.output


def test_every_listed_task_can_be_named(tmp_path: Path) -> None:
    """Reproduction: `Nifty-50_60` was listed as task Nifty-50:60, but `--tasks Nifty-50:60`
    was refused as malformed."""
    from metatrade.training.config import load_config
    from metatrade.training.task_sets import make_loader

    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(SAMPLE_DIR / "Nifty_60.parquet", folder / "Nifty-50_60.parquet")
    shutil.copy(SAMPLE_DIR / "Finnifty_60.parquet", folder / "Finnifty_60.parquet")
    describe_instruments(folder, **{"Nifty-50": {"calendar": "NSE", "currency": "INR"}})
    [task, _] = sorted(str(t) for t in DataLoader(folder, cache_dir=False).get_available_tasks())
    assert task == "Finnifty:60"
    cfg = load_config("tiny", data_dir=folder, tasks="Nifty-50:60,Finnifty:60")
    assert [str(t) for t in make_loader(cfg).tasks("train")] == ["Nifty-50:60"]


def test_a_gap_of_many_sessions_is_a_warning(tmp_path: Path) -> None:
    """Reproduction: two weeks without bars inside a task went unreported."""
    path = bars_csv(tmp_path / "Nifty_60.csv", 200, 60)
    df = pd.read_csv(path)
    df.loc[100:, "datetime"] += 14 * 86_400  # two weeks later
    df.to_csv(path, index=False)
    [problem] = [p for p in validate_folder(path) if "gap" in p.message]
    # 9 weekdays missing, one of them the Republic Day holiday: 8 NSE sessions
    assert problem.level == "warning" and "gap of 8 NSE (XBOM) sessions" in problem.message
    res = runner.invoke(app, ["data", "validate", "--data", str(tmp_path)])
    assert res.exit_code == 0 and "warning" in res.output
    res = runner.invoke(app, ["data", "list", "--data", str(tmp_path), "--lookback", "8"])
    assert res.exit_code == 0 and "sessions without a bar" in res.output


def test_num_inner_steps_zero_trains_plain_policy_gradient() -> None:
    """Reproduction: `meta.num_inner_steps: 0` passed validation and crashed mid-run. Now
    k = 0 works: no adaptation, the meta-loss is the policy's own surrogate on the episodes
    it sampled (plain policy gradient on theta), the pre- and post-update returns coincide."""
    import numpy as np
    import torch

    from metatrade.agents.policies import NetworkConfig, make_policy
    from metatrade.envs.nav2d import Navigation2DFamily
    from metatrade.meta import MetaConfig, MetaLearner
    from metatrade.training.config import validate_config

    assert validate_config({"meta": {"num_inner_steps": 0}}).meta.num_inner_steps == 0
    fam = Navigation2DFamily(max_episode_steps=10)
    probe = fam.make_batch_env(
        fam.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)), probe.observation_space, probe.action_space
    )
    for optimizer in ("adam", "trpo"):
        cfg = MetaConfig(
            num_inner_steps=0,
            optimizer=optimizer,
            meta_batch_size=2,
            episodes_per_task=3,
            num_evaluation_episodes=3,
        )
        learner = MetaLearner(policy, fam, cfg)
        before = {k: v.detach().clone() for k, v in learner.params.items()}
        stats = learner.step()
        assert stats["meta/return_pre"] == stats["meta/return_post"]
        assert any(not torch.equal(before[k], v.detach()) for k, v in learner.params.items())


def test_user_errors_are_one_line_but_bugs_keep_their_traceback() -> None:
    """Reproduction: every ValueError became a one-line "error:", hiding bugs."""
    import typer

    from metatrade.cli.common import cli_errors
    from metatrade.errors import CheckpointError

    def raising(exc: Exception):
        @cli_errors
        def command() -> None:
            raise exc

        return command

    for user in (ConfigError("bad key"), DataValidationError("bad row"), CheckpointError("x")):
        with pytest.raises(typer.Exit) as info:
            raising(user)()
        assert info.value.exit_code == 2
    for bug in (ValueError("internal"), KeyError("internal")):
        with pytest.raises(type(bug)):
            raising(bug)()


def test_timestamps_saved_as_an_unnamed_index_get_the_index_label_hint(tmp_path: Path) -> None:
    """Reproduction: a frame with the times as its (unnamed) pandas index, saved with
    `df.to_csv(path)`, got "missing column 'datetime'" and no hint how to save it."""
    frame = pd.read_csv(bars_csv(tmp_path / "x.csv", 300, 15))
    frame.index = pd.to_datetime(frame.pop("datetime"), unit="s", utc=True).rename(None)
    frame.to_csv(tmp_path / "Nifty_15.csv")
    [problem] = validate_folder(tmp_path / "Nifty_15.csv")
    assert "'datetime'" in problem.message
    assert 'df.to_csv(path, index_label="datetime")' in problem.message
    frame.to_csv(tmp_path / "Nifty_15.csv", index_label="datetime")  # the fix it names works
    assert validate_folder(tmp_path / "Nifty_15.csv") == []
    counter = frame.reset_index(drop=True)  # a row counter is not taken for timestamps
    counter.to_csv(tmp_path / "Nifty_15.csv")
    [problem] = validate_folder(tmp_path / "Nifty_15.csv")
    assert "index_label" not in problem.message


def test_a_gap_warning_does_not_advise_inventing_bars(tmp_path: Path) -> None:
    """Reproduction: a gap on a market holiday came with the advice to fill the missing
    sessions, i.e. to invent bars; it now says a closed exchange is fine."""
    path = bars_csv(tmp_path / "Nifty_60.csv", 200, 60)
    df = pd.read_csv(path)
    df.loc[100:, "datetime"] += 14 * 86_400  # two weeks without bars (8 NSE sessions)
    df.to_csv(path, index=False)
    [problem] = [p for p in validate_folder(path) if "gap" in p.message]
    assert "fill" not in problem.message and "holidays" in problem.message
    assert "never invent bars" in problem.message
