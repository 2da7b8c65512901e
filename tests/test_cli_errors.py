"""Issue #18: user mistakes on the command line end with one short `error:` line naming the
option or config key and the fix (exit 2), never a traceback; each test reproduces one
that did not."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.data import DataLoader
from metatrade.data.features import FEATURE_NAMES, feature_warmup_rows
from metatrade.training.config import ConfigError, apply_overrides, load_config
from metatrade.training.task_sets import check_episodes_fit, make_loader, task_pool

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})


def one_line_error(res) -> str:
    """The output of a refused command: exit 2, one `error:` line, no traceback."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [x for x in res.output.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error:")]
    assert len(errors) == 1, res.output
    return errors[0]


@pytest.fixture
def tiny_run(tiny_meta_run: Path) -> Path:
    return tiny_meta_run


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_episode_length_longer_than_the_train_split_names_the_key(tmp_path: Path) -> None:
    """Reproduction: `env.episode_length: 3000` was a ValueError traceback from the env."""
    line = one_line_error(
        invoke(
            "meta-train",
            "-c",
            write(tmp_path, "env:\n  episode_length: 3000\n"),
            "--out",
            tmp_path / "run",
        )
    )
    assert "env.episode_length: 3000" in line
    # the longest value it suggests is the longest that fits every training task
    cfg = load_config(write(tmp_path, "env:\n  episode_length: 3000\n"))
    loader = make_loader(cfg)
    tasks = task_pool(cfg, loader, "train")
    longest = int(line.rsplit("<= ", 1)[1].split()[0])
    check_episodes_fit(
        apply_overrides(cfg, {"env.episode_length": longest}),
        loader,
        tasks,
    )
    with pytest.raises(ConfigError):
        check_episodes_fit(
            apply_overrides(cfg, {"env.episode_length": longest + 1}),
            loader,
            tasks,
        )


def test_lookback_longer_than_the_files_names_env_lookback(tmp_path: Path) -> None:
    """Reproduction: `env.lookback: 5000` said the tasks were "not found"."""
    config = write(tmp_path, "data:\n  tasks: [Nifty:60]\nenv:\n  lookback: 5000\n")
    line = one_line_error(invoke("meta-train", "-c", config, "--out", tmp_path / "run"))
    assert "env.lookback: 5000" in line and "not found" not in line
    bars = len(DataLoader().get_task_data("Nifty", "60"))
    assert f"env.lookback <= {bars - feature_warmup_rows() - 1}" in line


@pytest.mark.parametrize("n", ["0", "-5"])
def test_iterations_below_one_is_one_line(tmp_path: Path, n: str) -> None:
    """Reproduction: `-n 0` / `-n -5` were pydantic ValidationError tracebacks."""
    line = one_line_error(invoke("meta-train", "-c", "tiny", "-n", n, "--out", tmp_path))
    assert "-n/--iterations" in line and f"got {n}" in line


def test_seed_beyond_the_seed_range_is_one_line(tmp_path: Path) -> None:
    """Reproduction: `--seed 99999999999999999999` overflowed in torch.manual_seed."""
    line = one_line_error(
        invoke("meta-train", "-c", "tiny", "--seed", "99999999999999999999", "--out", tmp_path)
    )
    assert "--seed (run.seed): expected a value <= 4294967295" in line


def test_train_timesteps_zero_is_an_error(tmp_path: Path) -> None:
    """Reproduction: `train --timesteps 0` trained nothing and exited 0."""
    line = one_line_error(invoke("train", "-c", "tiny", "--timesteps", "0", "--out", tmp_path))
    assert "--timesteps (ppo.total_timesteps): expected a positive number, got 0" in line
    assert not (tmp_path / "ppo" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--from", "garbage"], "--from 'garbage': the first fold starts at a split"),
        (["--from", "pretrained"], "--from 'pretrained'"),
        (["--from", "99999999"], "the first fold must start between row"),
        (["--from", "2030-01-01"], "--from '2030-01-01' is row"),
        (["--normalisation", "foo"], "--normalisation 'foo': use expanding or train-split"),
        (["--embargo", "100000"], "use a smaller --adapt-bars/--adapt-days or --embargo"),
        (["--start", "pretrained"], "renamed; use --from pretrained"),
    ],
)
def test_walkforward_bad_geometry_is_one_line(
    tiny_run: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    """Reproduction: each of these was a traceback (`--from garbage`: 59 lines of
    DateParseError)."""
    res = invoke("walkforward", "--checkpoint", tiny_run, "--out", tmp_path, *args)
    assert expected in one_line_error(res)


def test_signal_start_is_renamed_start_policy(tiny_run: Path) -> None:
    """Reproduction: `--start` meant the first fold in walkforward but the start policy in
    signal; signal's is `--start-policy`, and the old spelling names it."""
    line = one_line_error(invoke("signal", "--checkpoint", tiny_run, "--start", "random"))
    assert "use --start-policy random" in line
    line = one_line_error(invoke("signal", "--checkpoint", tiny_run, "--start-policy", "nope"))
    assert "--start-policy 'nope': available" in line


def test_exact_estimator_config_errors_are_short(tmp_path: Path) -> None:
    """Reproduction: these errors were one line but 400-900 characters (the whole section
    dumped after "got")."""
    for text in ("meta:\n  estimator: exact\n", "meta:\n  estimator: exact\n  optimizer: adam\n"):
        line = one_line_error(invoke("meta-train", "-c", write(tmp_path, text), "--out", tmp_path))
        assert "estimator" in line and "got {" not in line and len(line) < 300, line


def test_a_wide_observation_gets_a_fast_value_baseline_by_default() -> None:
    """Reproduction: `env.lookback: 400` with the default baseline fitted a ridge on 17,600
    features per task (minutes a meta-iteration, no output); now the default for a wide
    observation is the latest bar and the account (docs/configuration.md)."""
    wide = load_config(overrides={"env.lookback": 400})
    assert wide.meta.baseline_obs_dims == len(FEATURE_NAMES) + 4
    narrow = load_config("tiny")  # 8 bars x 22 features + 4: small enough for all of it
    assert narrow.meta.baseline_obs_dims is None
    chosen = load_config(overrides={"env.lookback": 400, "meta.baseline_obs_dims": 100})
    assert chosen.meta.baseline_obs_dims == 100


def test_heldout_refusal_suggests_only_options_the_command_takes(tiny_run: Path) -> None:
    """Reproduction: `walkforward`/`signal` on a training task suggested `--allow-seen`,
    which they reject."""
    for command in ("walkforward", "signal"):
        line = one_line_error(invoke(command, "--checkpoint", tiny_run, "--tasks", "Nifty:60"))
        assert "Nifty:60" in line and "or pass --allow-seen" not in line
        assert "--allow-seen" not in invoke(command, "--help").output
    for command in ("adapt", "backtest", "evaluate"):  # what the hint says takes it
        assert "--allow-seen" in invoke(command, "--help").output


def test_steps_default_is_the_runs_inner_steps_everywhere(tiny_run: Path, tmp_path: Path) -> None:
    """Reproduction: `-k` defaulted to 0 in backtest and 1 in walkforward; now every command
    defaults to the run's meta.num_inner_steps (tiny: 1)."""
    res = invoke("backtest", "--checkpoint", tiny_run, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "MAML (k=1)" in res.output
    for command in ("adapt", "backtest", "walkforward", "signal"):
        assert "meta.num_inner_steps" in " ".join(invoke(command, "--help").output.split())
