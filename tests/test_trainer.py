"""Trainer.meta_train on tiny real families: it learns, checkpoints, resumes exactly, and
refuses corrupted or incompatible checkpoints with a clear CheckpointError."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from metatrade.agents.checkpoint import CheckpointError
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.training.build import make_family
from metatrade.training.checkpoint import checkpoint_path, load_run_checkpoint
from metatrade.training.config import RunConfig, load_config
from metatrade.training.trainer import Trainer

NAV_TINY = {
    "data.family": "nav2d",
    "env.episode_length": 10,
    "policy.hidden_sizes": [8],
    "meta.meta_batch_size": 3,
    "meta.episodes_per_task": 3,
    "meta.num_evaluation_episodes": 2,
    "meta.optimizer": "adam",
    "meta.lr": 0.05,
    "run.checkpoint_interval": 2,
}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matmuls: one thread is fastest and keeps timings stable on a shared machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def nav_config(**extra) -> RunConfig:
    return load_config(overrides={**NAV_TINY, **extra})


def make_trainer(cfg: RunConfig, run_dir: Path | None) -> Trainer:
    return Trainer(make_family(cfg), None, config=cfg, run_dir=run_dir, progress=False)


def initial_params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer._policy().named_parameters()}


def test_meta_train_changes_params_and_checkpoint_round_trips(tmp_path: Path) -> None:
    cfg = nav_config()
    trainer = make_trainer(cfg, tmp_path)
    before = initial_params(trainer)
    last = trainer.meta_train(3, 1, 2, 3)
    assert {"meta/loss", "meta/return_pre", "meta/return_post", "meta/kl"} <= set(last)
    after = trainer.params
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # The checkpoint is a plain weights_only torch file holding exactly these parameters.
    path = checkpoint_path(tmp_path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["kind"] == "MetaTrainer"
    ck_cfg, state = load_run_checkpoint(tmp_path)
    assert state["iteration"] == 3 and ck_cfg == trainer.config
    for k, v in after.items():
        assert torch.equal(state["learner"]["params"][k], v)

    # Run directory: resolved config and one CSV row per iteration (TensorBoard alongside).
    assert (tmp_path / "config.yaml").is_file()
    rows = list(csv.DictReader((tmp_path / "logs" / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert list((tmp_path / "logs" / "tb").glob("events.out.tfevents.*"))


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = nav_config()
    full = make_trainer(cfg, tmp_path / "full")
    full.meta_train(num_meta_iterations=4)

    part = make_trainer(cfg, tmp_path / "part")
    part.meta_train(num_meta_iterations=2)  # stops after the checkpoint at iteration 2
    resumed = make_trainer(cfg, tmp_path / "part")
    resumed.meta_train(num_meta_iterations=4, resume=tmp_path / "part")
    for k, v in full.params.items():
        assert torch.equal(resumed.params[k], v), k
    rows = list(csv.DictReader((tmp_path / "part" / "logs" / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    a = make_trainer(nav_config(), None)
    a.meta_train(num_meta_iterations=2)
    b = make_trainer(nav_config(), None)
    b.meta_train(num_meta_iterations=2)
    c = make_trainer(nav_config(**{"run.seed": 1}), None)
    c.meta_train(num_meta_iterations=2)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert any(not torch.equal(a.params[k], c.params[k]) for k in a.params)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    make_trainer(nav_config(), run).meta_train(num_meta_iterations=2)
    return run


def test_truncated_checkpoint_is_a_clear_error(saved_run: Path, tmp_path: Path) -> None:
    data = checkpoint_path(saved_run).read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_run_checkpoint(bad)


def test_corrupted_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00not a checkpoint at all" * 100)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_run_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such file or run directory"):
        load_run_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        load_run_checkpoint(tmp_path)


def test_incompatible_checkpoint_is_a_clear_error(saved_run: Path, tmp_path: Path) -> None:
    # Another network: the resume check names the differing config key.
    wider = nav_config(**{"policy.hidden_sizes": [16]})
    with pytest.raises(CheckpointError, match=r"different config \(policy.hidden_sizes\)"):
        make_trainer(wider, tmp_path).meta_train(num_meta_iterations=3, resume=saved_run)
    # An agent checkpoint is not a run checkpoint.
    from metatrade.agents.checkpoint import save_checkpoint

    other = save_checkpoint(tmp_path / "agent.pt", "PPOAgent", {}, {"policy": {}})
    with pytest.raises(CheckpointError, match="holds a 'PPOAgent', not a 'MetaTrainer'"):
        load_run_checkpoint(other, "MetaTrainer")


def test_meta_train_on_tiny_trading_config(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    trainer = make_trainer(cfg, tmp_path)
    before = initial_params(trainer)
    trainer.meta_train(num_meta_iterations=2)
    assert any(not torch.equal(before[k], trainer.params[k]) for k in before)
    _, state = load_run_checkpoint(tmp_path)
    assert all(torch.equal(state["learner"]["params"][k], v) for k, v in trainer.params.items())


def test_run_backtest_and_report_prints_and_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metatrade.market import TradingEnv
    from metatrade.training.build import make_env_config, make_ppo_agent
    from metatrade.training.task_sets import make_loader

    cfg = load_config("tiny")
    loader = make_loader(cfg)
    env = TradingEnv(loader.get_task_arrays("Finnifty", "60"), make_env_config(cfg, split="test"))
    family = make_family(cfg)
    from metatrade.training.build import multitask_env

    agent = make_ppo_agent(cfg, multitask_env(cfg, family))
    trainer = Trainer(family, agent, config=cfg, run_dir=tmp_path, progress=False)
    out = trainer.run_backtest_and_report(agent, env)
    printed = capsys.readouterr().out
    assert "=== Backtesting Report ===" in printed and "Profit Factor" in printed
    assert set(out["metrics"]) == {"default costs", "stressed (+2 bps/side)"}
    assert (tmp_path / "reports" / "equity.png").is_file()
    assert (tmp_path / "reports" / "trades.csv").is_file()


def test_meta_train_trains_a_maml_agent_in_place(tmp_path: Path) -> None:
    from metatrade.agents.maml_agent import MAMLAgent
    from metatrade.envs.nav2d import Navigation2DFamily
    from metatrade.meta.learner import MetaConfig

    family = Navigation2DFamily(max_episode_steps=10)
    env = family.make_batch_env(
        family.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    agent = MAMLAgent(
        env.observation_space,
        env.action_space,
        meta_config=MetaConfig(optimizer="adam", lr=0.05, meta_batch_size=3, episodes_per_task=3),
        hidden_sizes=(8,),
    )
    before = {k: v.detach().clone() for k, v in agent.params.items()}
    trainer = Trainer(family, agent, run_dir=tmp_path, progress=False)
    assert trainer.config.meta.optimizer == "adam" and trainer.config.meta.lr == 0.05
    trainer.meta_train(num_meta_iterations=2, num_evaluation_steps=2)
    assert agent.learner.config.num_evaluation_episodes == 2
    assert any(not torch.equal(before[k], agent.params[k]) for k in before)
    _, state = load_run_checkpoint(tmp_path)
    assert all(torch.equal(state["learner"]["params"][k], v) for k, v in agent.params.items())


def test_train_runs_ppo_for_num_episodes(tmp_path: Path) -> None:
    from metatrade.training.build import multitask_env

    cfg = load_config("tiny")
    env = multitask_env(cfg, make_family(cfg))
    trainer = Trainer(env, None, num_episodes=2, log_interval=1, config=cfg, run_dir=tmp_path)
    last = trainer.train()
    slots = env.num_tasks * env.episodes_per_task
    assert last["time/total_timesteps"] >= 2 * env.max_episode_steps * slots
    assert (tmp_path / "ppo" / "checkpoints" / "ppo.pt").is_file()  # PPO owns <run>/ppo
    rows = list(csv.DictReader((tmp_path / "ppo" / "logs" / "metrics.csv").open()))
    assert len(rows) == len(trainer.history) >= 1


def test_a_second_meta_train_call_continues(tmp_path: Path) -> None:
    cfg = nav_config()
    once = make_trainer(cfg, None)
    once.meta_train(num_meta_iterations=4)
    twice = make_trainer(cfg, None)
    twice.meta_train(num_meta_iterations=2)
    twice.meta_train(num_meta_iterations=4)
    assert len(twice.history) == 4
    assert all(torch.equal(once.params[k], twice.params[k]) for k in once.params)
    with pytest.raises(CheckpointError, match="already at iteration 4 of 4"):
        twice.meta_train(num_meta_iterations=4)


def test_each_entry_point_names_the_kind_of_env_it_needs() -> None:
    """Trainer.meta_train takes a TaskFamily, Trainer.train a BatchEnv: the wrong one is a
    TypeError that names the other entry point, not an AttributeError deep in a loop."""
    family = Navigation2DFamily()
    env = family.make_batch_env(
        family.sample_tasks(2, task_set="train", rng=np.random.default_rng(0)), 2
    )
    with pytest.raises(TypeError, match="Trainer.train"):
        Trainer(env, None).meta_train(num_meta_iterations=1)
    with pytest.raises(TypeError, match="Trainer.meta_train"):
        Trainer(family, None).train(total_timesteps=10)
