"""RunConfig: YAML loading, validation errors that name file and key, overrides, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from metatrade.training.config import (
    ConfigError,
    RunConfig,
    load_config,
    packaged_config,
    parse_tasks,
    save_config,
    validate_config,
)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key_path(tmp_path: Path) -> None:
    path = write(tmp_path, "meta:\n  inner_lrr: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert str(path) in msg and "meta.inner_lrr: unknown key" in msg


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metaa: unknown key"):
        load_config(write(tmp_path, "metaa: {}\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("meta:\n  inner_lr: abc\n", "meta.inner_lr: expected a number, got 'abc'"),
        ("meta:\n  inner_lr: -0.5\n", "meta.inner_lr: expected a positive number, got -0.5"),
        ("meta:\n  meta_batch_size: 2.5\n", "meta.meta_batch_size: expected an integer"),
        ("meta:\n  optimizer: sgd\n", "meta.optimizer: Input should be 'trpo', 'adam' or 'promp'"),
        ("env:\n  costs:\n    entry_fee: -1\n", "env.costs.entry_fee: expected a value >= 0"),
        ("data:\n  tasks: [Nifty-5]\n", "data.tasks: expected a task as 'Instrument:TF'"),
        ("data:\n  splits: {train: 0.5}\n", "data.splits: train + validation + test must sum"),
        ("policy:\n  hidden_sizes: [64, 0]\n", "policy.hidden_sizes: expected positive"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert expected in str(exc.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+, column \d+\)"):
        load_config(write(tmp_path, "meta:\n  inner_lr: [0.1\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_cli_overrides_apply_and_validate(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "run:\n  seed: 1\n"),
        seed=7,
        tasks="Nifty:5,Finnifty:15",
        data_dir=tmp_path,
        out_dir=tmp_path / "out",
    )
    assert cfg.run.seed == 7
    assert cfg.data.tasks == ["Nifty:5", "Finnifty:15"]
    assert cfg.data.data_dir == str(tmp_path)
    assert cfg.run_dir() == tmp_path / "out"
    with pytest.raises(ConfigError, match="--tasks: expected a task as 'Instrument:TF'"):
        parse_tasks("Nifty5")
    with pytest.raises(ConfigError, match="meta.inner_lr"):
        load_config(overrides={"meta.inner_lr": "x"})


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("tiny", seed=3)
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["run"]["seed"] == 3


def test_meta_section_is_meta_config_validated_once() -> None:
    """The meta section is metatrade.meta.config.MetaSettings (plus num_meta_iterations): its
    validation names the key path, and the learner gets exactly the section's values."""
    from metatrade.meta.config import MetaConfig
    from metatrade.training.build import make_meta_config

    with pytest.raises(ConfigError, match=r"meta\.inner_lr"):
        validate_config({"meta": {"inner_lr": -1.0}})
    with pytest.raises(ConfigError, match=r"meta\.inner_lrr"):
        validate_config({"meta": {"inner_lrr": 0.1}})
    with pytest.raises(ConfigError, match="multi_step_loss"):
        validate_config({"meta": {"multi_step_loss": True, "optimizer": "promp"}})
    with pytest.raises(ConfigError, match="run.seed"):
        validate_config({"meta": {"seed": 5}})
    cfg = validate_config({"meta": {"inner_step_sizes": [0.5, 0.25]}, "run": {"seed": 3}})
    meta = make_meta_config(cfg)
    assert type(meta) is MetaConfig
    assert meta.inner_step_sizes == (0.5, 0.25) and meta.step_size(5) == 0.25
    assert meta.seed == 3 and meta.num_inner_steps == cfg.meta.num_inner_steps


def test_market_and_data_sections_are_the_layers_validated_classes() -> None:
    """Issue 22: the env, costs, shaping, splits and evaluation sections are the layers' own
    dataclasses, so a run config with no keys builds exactly the objects their defaults
    build (a default written in a section of its own would drift from the layer's)."""
    from metatrade.data.splits import SplitConfig
    from metatrade.evaluation.baselines import ClassicalConfig
    from metatrade.evaluation.protocol_config import ProtocolConfig, ProtocolSettings
    from metatrade.market import CostModel, RewardShaping, TradingEnvConfig
    from metatrade.market.config import EnvSettings
    from metatrade.training.build import make_env_config, make_protocol_config

    cfg = RunConfig()
    assert isinstance(cfg.env, EnvSettings) and isinstance(cfg.env.shaping, RewardShaping)
    assert isinstance(cfg.data.splits, SplitConfig) and isinstance(cfg.evaluation, ProtocolSettings)
    assert isinstance(cfg.evaluation.classical, ClassicalConfig)
    assert make_env_config(cfg) == TradingEnvConfig()
    assert dataclasses.asdict(cfg.data.splits) == dataclasses.asdict(SplitConfig())
    protocol, default = make_protocol_config(cfg), ProtocolConfig()
    for f in dataclasses.fields(ProtocolSettings):
        assert getattr(protocol, f.name) == getattr(default, f.name), f.name
    assert protocol.classical_settings == ClassicalConfig()
    costs = validate_config({"env": {"costs": {"preset": "bps", "buy_bps": 1.5}}}).env.costs
    assert isinstance(costs, CostModel) and (costs.name, costs.buy_bps) == ("bps", 1.5)
    with pytest.raises(ConfigError, match=r"data\.splits: train \+ validation"):
        validate_config({"data": {"splits": {"train": 0.5}}})
    with pytest.raises(ConfigError, match=r"env\.shaping\.drawdown_penalty"):
        validate_config({"env": {"shaping": {"drawdown_penalty": -1.0}}})


def test_costs_written_by_earlier_runs_load_as_the_same_cost_model(tmp_path: Path) -> None:
    """A run directory's config.yaml from before the costs section was CostModel itself holds
    a preset and every term, unset ones null; it loads as the model it described, and the
    resolved config (CostModel's fields) round-trips."""
    old = {"preset": "nse_index_futures", "entry_fee": None, "slippage_bps": 1.0}
    old |= dict.fromkeys(("exit_fee", "proportional_bps", "buy_bps", "sell_bps"))
    old |= {"commission_bps": None, "half_spread_bps": None}
    cfg = validate_config({"env": {"costs": old}})
    from metatrade.market.costs import PRESETS

    assert cfg.env.costs == dataclasses.replace(PRESETS["nse_index_futures"], slippage_bps=1.0)
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(path).env.costs == cfg.env.costs


def test_meta_seed_of_earlier_runs_reads_as_run_seed() -> None:
    """One seed, run.seed: the meta.seed key runs wrote before is dropped when it agrees with
    run.seed (or is the old default 0) and an error naming run.seed when it does not."""
    cfg = validate_config({"meta": {"seed": 4, "lr": 0.01}, "run": {"seed": 4}})
    assert "seed" not in cfg.to_dict()["meta"] and cfg.run.seed == 4 and cfg.meta.lr == 0.01
    assert validate_config({"meta": {"seed": 0}, "run": {"seed": 9}}).run.seed == 9
    with pytest.raises(ConfigError, match=r"meta\.seed=5: a run has one seed, run\.seed"):
        validate_config({"meta": {"seed": 5}, "run": {"seed": 4}})


def test_ppo_section_is_ppo_hyperparameters_validated_once() -> None:
    """The ppo section is metatrade.agents.ppo_config.PPOHyperparameters (plus the run's
    budget): validation names the key path, and PPOAgent's config gets its values, the
    policy section's network and run.seed."""
    from metatrade.agents.ppo_config import PPOConfig
    from metatrade.training.build import make_ppo_config

    with pytest.raises(ConfigError, match=r"ppo\.clip_coef"):
        validate_config({"ppo": {"clip_coef": 0.0}})
    with pytest.raises(ConfigError, match=r"ppo\.clip_cof"):
        validate_config({"ppo": {"clip_cof": 0.1}})
    cfg = validate_config(
        {
            "ppo": {"n_steps": 16, "reward_scale": 10.0},
            "policy": {"hidden_sizes": [8]},
            "run": {"seed": 4},
        }
    )
    ppo = make_ppo_config(cfg)
    assert type(ppo) is PPOConfig
    assert (ppo.n_steps, ppo.reward_scale, ppo.hidden_sizes, ppo.seed) == (16, 10.0, (8,), 4)
    with pytest.raises(ValueError, match="learning_rate"):
        PPOConfig(learning_rate=-1.0)


@pytest.mark.parametrize(
    "name", ["demo", "tiny", "nav2d", "synthetic", "exact", "sampled", "regimes"]
)
def test_shipped_configs_load_and_match_packaged(name: str) -> None:
    user = REPO / "configs" / f"{name}.yaml"
    assert load_config(user) == load_config(name)
    assert user.read_text() == packaged_config(name).read_text()


def _keys(model: object, prefix: str = "") -> list[str]:
    """Every dotted key of a config: pydantic models and the (pydantic) dataclass sections."""
    from pydantic import BaseModel

    names = (
        type(model).model_fields
        if isinstance(model, BaseModel)
        else [f.name for f in dataclasses.fields(model)]
    )
    out = []
    for name in names:
        value = getattr(model, name)
        if isinstance(value, BaseModel) or dataclasses.is_dataclass(value):
            out += _keys(value, f"{prefix}{name}.")
        out.append(f"{prefix}{name}")
    return out


def test_configuration_reference_documents_every_key() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = [k for k in _keys(RunConfig()) if f"`{k}`" not in doc]
    assert not missing, f"docs/configuration.md lacks {missing}"


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("data:\n  path: my_bars\n", "did you mean data.data_dir?"),
        ("meta:\n  inner_lrr: 0.1\n", "did you mean meta.inner_lr"),
        ("meta:\n  lookback: 8\n", "did you mean env.lookback?"),
        ("env:\n  costs: {entry_fe: 1}\n", "did you mean env.costs.entry_fee"),
        ("metaa: {}\n", "did you mean meta?"),
    ],
)
def test_unknown_key_suggests_the_key_meant(tmp_path: Path, text: str, suggestion: str) -> None:
    """Reproduction: `data.path` said "unknown key" without naming `data.data_dir`."""
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert suggestion in str(exc.value)


def test_relative_data_and_out_are_stored_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reproduction: `meta-train --data data2` stored "data2" as written, so evaluating or
    resuming from another working directory read another folder (or none). Now the run's
    config.yaml holds the absolute path, and reading it elsewhere loads the same files."""
    import shutil

    from metatrade.data.loader import SAMPLE_DIR
    from metatrade.training.task_sets import make_loader

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    (here / "data2").mkdir(parents=True)
    (elsewhere / "data2").mkdir(parents=True)  # a different folder of the same name
    for name in ("Nifty_60", "Bank_Nifty_60", "Finnifty_60"):
        shutil.copy(SAMPLE_DIR / f"{name}.parquet", here / "data2")
    monkeypatch.chdir(here)
    cfg = load_config("tiny", data_dir="data2", out_dir="runs/r")
    assert cfg.data.data_dir == str(here / "data2") and cfg.run_dir() == here / "runs" / "r"
    saved = save_config(cfg, cfg.run_dir() / "config.yaml")
    monkeypatch.chdir(elsewhere)
    again = load_config(saved)
    assert again.data.data_dir == str(here / "data2") and again.run_dir() == here / "runs" / "r"
    assert len(make_loader(again).get_available_tasks()) == 3
