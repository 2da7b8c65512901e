"""Factories: from a ``RunConfig`` to the objects of the other layers.

The only place where config sections turn into ``DataLoader``, ``TradingEnvConfig``,
task families, policies, ``MetaConfig``, ``PPOConfig`` and learners, so the CLI, the
``Trainer`` and the tests build a run the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metatrade.training.checkpoint import RNGStreams
from metatrade.training.config import ConfigError, RunConfig
from metatrade.training.task_sets import (
    TaskSubset,
    check_episodes_fit,
    make_loader,
    synthetic_dir,
    task_pool,
    task_source,
)

if TYPE_CHECKING:  # the layers are imported where used, so importing build stays light
    from metatrade.agents.ppo import PPOAgent, PPOConfig
    from metatrade.data import DataLoader
    from metatrade.data.task_arrays import TaskArrays, TaskId
    from metatrade.evaluation.protocol_config import ProtocolConfig
    from metatrade.market import TradingEnvConfig
    from metatrade.meta.learner import MetaConfig, MetaLearner
    from metatrade.meta.protocols import BatchEnv, TaskFamily

# Probing a family for its spaces uses its own stream, so it never shifts the run's streams.
_PROBE_SEED = 12345


# ---- data and environments ----------------------------------------------------------------
def make_env_config(cfg: RunConfig, **overrides: Any) -> TradingEnvConfig:
    """``TradingEnvConfig`` from the ``env`` section: its ``EnvSettings`` as they are, its
    ``position_fraction`` as the sizer (``overrides``: e.g. split, episode_length)."""
    from metatrade.market import FixedFractionSizer, TradingEnvConfig
    from metatrade.market.config import EnvSettings

    settings = {f.name: getattr(cfg.env, f.name) for f in fields(EnvSettings)}
    sizer = FixedFractionSizer(fraction=cfg.env.position_fraction)
    return TradingEnvConfig(**{**settings, "sizer": sizer, **overrides})


def make_family(
    cfg: RunConfig, loader: DataLoader | None = None, period: str = "train"
) -> TaskFamily:
    """The task family of ``data.family``: a ``TaskFamily`` for the meta-RL core.

    ``period`` is the time split trading episodes use ("train" for (meta-)training).
    """
    if cfg.data.family == "nav2d":
        from metatrade.envs.nav2d import Navigation2DFamily

        return Navigation2DFamily(max_episode_steps=cfg.env.episode_length)
    from metatrade.envs.trading import TradingTaskFamily

    loader = loader if loader is not None else make_loader(cfg)
    source = task_source(cfg, loader)
    if not task_pool(cfg, loader, "train"):
        raise ConfigError(
            "data: no meta-training tasks left after data.tasks and data.heldout; "
            "hold out fewer tasks or list more in data.tasks"
        )
    check_episodes_fit(cfg, loader, task_pool(cfg, loader, "train"))
    return TradingTaskFamily(source, make_env_config(cfg), period=period, objective=cfg.objective)


def probe_spaces(family: TaskFamily) -> BatchEnv:
    """A one-task BatchEnv of the family, to read observation/action spaces and layout."""
    rng = np.random.default_rng(_PROBE_SEED)
    tasks = family.sample_tasks(1, task_set="train", rng=rng)
    return family.make_batch_env(tasks, 1)


# ---- policies and learners ----------------------------------------------------------------
def policy_kwargs(cfg: RunConfig, env: BatchEnv) -> dict[str, Any]:
    p = cfg.policy
    return {
        "window_shape": getattr(env, "window_shape", None),
        "account_dim": getattr(env, "account_dim", 0),
        "feature_groups": feature_group_ids(cfg.env.features) if p.kind == "linear" else None,
    }


def feature_group_ids(features: Sequence[str] | None) -> list[int] | None:
    """The linear policy's gain group of each observed feature column, from the names
    (``metatrade.data.features.feature_group``: the six ``next_sixth`` columns share one
    gain, the two ``open_gap_decay`` columns one; measured in docs/regimes.md); None for the
    standard features (one gain per column)."""
    if features is None:
        return None
    from metatrade.data.features import feature_group

    groups = [feature_group(f) for f in features]
    order = list(dict.fromkeys(groups))
    return [order.index(g) for g in groups]


def make_policy_for(cfg: RunConfig, family: TaskFamily, seed: int | None = None) -> torch.nn.Module:
    """The policy network for ``family``'s spaces, initialised from ``run.seed``."""
    from metatrade.agents.policies import make_policy

    env = probe_spaces(family)
    return make_policy(
        cfg.policy,
        env.observation_space,
        env.action_space,
        seed=cfg.run.seed if seed is None else seed,
        **policy_kwargs(cfg, env),
    )


def make_meta_config(cfg: RunConfig) -> MetaConfig:
    """The ``meta`` section as the learner's ``MetaConfig`` (its settings, seeded by run.seed)."""
    from metatrade.meta.config import MetaConfig, MetaSettings

    settings = {f.name: getattr(cfg.meta, f.name) for f in fields(MetaSettings)}
    return MetaConfig(**settings, seed=cfg.run.seed)


def make_learner(
    cfg: RunConfig, family: TaskFamily, policy: torch.nn.Module, rng: RNGStreams
) -> MetaLearner:
    """A ``MetaLearner`` for the policy over the family, drawing from the run's RNG streams."""
    from metatrade.meta.learner import MetaLearner

    return MetaLearner(policy, family, make_meta_config(cfg))


def rebuild_learner(cfg: RunConfig, old: MetaLearner, family: TaskFamily) -> MetaLearner:
    """``old`` (theta, iteration, optimizer moments kept) under ``cfg``'s ``meta`` settings
    and over ``family`` (``MetaLearner.with_config``): a MAMLAgent trained on by a run."""
    old.family = family
    return old.with_config(replace(make_meta_config(cfg), seed=old.config.seed))


def make_ppo_config(cfg: RunConfig, seed: int | None = None) -> PPOConfig:
    from metatrade.agents.networks.config import NetworkConfig
    from metatrade.agents.ppo import PPOConfig
    from metatrade.agents.ppo_config import PPOHyperparameters

    values = {f.name: getattr(cfg.ppo, f.name) for f in fields(PPOHyperparameters)}
    values |= {f.name: getattr(cfg.policy, f.name) for f in fields(NetworkConfig)}
    return PPOConfig(**values, seed=cfg.run.seed if seed is None else seed)


def make_ppo_agent(cfg: RunConfig, env: BatchEnv) -> PPOAgent:
    from metatrade.agents.ppo import PPOAgent

    return PPOAgent.from_env(env, make_ppo_config(cfg))


def ppo_agent_for(cfg: RunConfig, env: BatchEnv, agent: Any) -> PPOAgent:
    """The agent ``Trainer.train`` trains: ``agent``, or a new one (``make_ppo_agent``)."""
    from metatrade.agents.ppo import PPOAgent

    agent = make_ppo_agent(cfg, env) if agent is None else agent
    if not isinstance(agent, PPOAgent):
        raise TypeError(f"Trainer.train trains a PPOAgent, not a {type(agent).__name__}")
    return agent


def meta_family(env: Any) -> TaskFamily:
    """``env`` as the TaskFamily ``Trainer.meta_train`` samples tasks from."""
    from metatrade.meta.protocols import TaskFamily

    if not isinstance(env, TaskFamily):
        raise TypeError(
            f"Trainer.meta_train needs a TaskFamily (sample_tasks, make_batch_env); got "
            f"{type(env).__name__}. A BatchEnv of fixed tasks trains with Trainer.train."
        )
    return env


def ppo_batch_env(env: Any) -> BatchEnv:
    """``env`` as the BatchEnv ``Trainer.train`` steps."""
    from metatrade.meta.protocols import BatchEnv

    if not isinstance(env, BatchEnv):
        raise TypeError(
            f"Trainer.train needs a BatchEnv (tasks x episodes stepped together); got "
            f"{type(env).__name__}. A TaskFamily meta-trains with Trainer.meta_train."
        )
    return env


def multitask_env(cfg: RunConfig, family: TaskFamily) -> BatchEnv:
    """A BatchEnv over every meta-training task (trading) or ``ppo.tasks_per_batch`` sampled
    tasks (nav2d): what multi-task PPO trains on."""
    source = getattr(family, "loader", None)
    if source is not None and hasattr(source, "tasks"):
        tasks = source.tasks("train")
    else:
        rng = np.random.default_rng(cfg.run.seed)
        tasks = family.sample_tasks(cfg.ppo.tasks_per_batch, task_set="train", rng=rng)
    return family.make_batch_env(tasks, cfg.ppo.episodes_per_task)


def load_meta_policy(cfg: RunConfig, state: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """The run's policy network with the checkpoint's meta-parameters loaded.

    Built from the spaces of any task of the data folder (the folder may hold only the
    evaluation tasks). ``CheckpointError`` (naming the file and the tensors) if they do not
    fit the network the config describes on this data (e.g. another lookback or feature set).
    """
    from metatrade.agents.checkpoint import CheckpointError, load_module_state
    from metatrade.envs.trading import TradingTaskFamily

    learner = state.get("learner")
    if not isinstance(learner, dict) or not isinstance(learner.get("params"), dict):
        raise CheckpointError(f"checkpoint {path}: holds no meta-parameters (learner.params)")
    loader = make_loader(cfg)
    every = TaskSubset(loader, loader.get_available_tasks(), [])
    policy = make_policy_for(cfg, TradingTaskFamily(every, make_env_config(cfg)))
    load_module_state(path, policy, learner["params"], "meta-parameters")
    return policy


def load_inner_lrs(state: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The Meta-SGD per-parameter step sizes a run learned (None when it learned none):
    adaptation at test time uses them, as training did (Li et al., 2017)."""
    lrs = (state.get("learner") or {}).get("inner_lrs")
    return None if lrs is None else {k: v.detach().clone() for k, v in lrs.items()}


# ---- meta-test ----------------------------------------------------------------------------
def make_protocol_config(cfg: RunConfig, tasks: Collection[TaskId] | None = None) -> ProtocolConfig:
    """``ProtocolConfig`` from the ``evaluation``, ``meta`` and ``env`` sections.

    The synthetic family's oracle is used when the data folder has the regimes of every
    evaluated task (``tasks``); a user's ``--data`` folder has none: no oracle column."""
    from metatrade.data.synthetic import PARAMS_FILE, load_synthetic_params
    from metatrade.evaluation.protocol_config import ProtocolConfig, ProtocolSettings

    ev = cfg.evaluation
    oracle = None
    folder = synthetic_dir(cfg)
    if cfg.data.family == "synthetic" and (folder / PARAMS_FILE).is_file():
        oracle = load_synthetic_params(folder)
        if tasks is not None and not set(tasks) <= set(oracle):
            oracle = None
    return ProtocolConfig(
        **{f.name: getattr(ev, f.name) for f in fields(ProtocolSettings)},
        episode_length=cfg.env.episode_length,
        test_episode_length=cfg.env.episode_length,
        adaptation=make_meta_config(cfg),
        objective=cfg.objective,
        references=tuple(b for b in ("buy_and_hold", "flat") if b in ev.baselines),
        classical=classical_rows(cfg),
        classical_settings=ev.classical,
        seed=cfg.run.seed,
        env=make_env_config(cfg),
        oracle=oracle,
        deterministic_test=ev.actions == "mode",
    )


def classical_rows(cfg: RunConfig) -> tuple[str, ...]:
    """The classical rows ``evaluation.baselines`` asks for, in table order."""
    from metatrade.evaluation.baselines import CLASSICAL

    return tuple(b for b in CLASSICAL if b in cfg.evaluation.baselines)


def check_ppo_fits(
    cfg: RunConfig, agent: PPOAgent, arrays: TaskArrays, path: str | Path | None = None
) -> None:
    """``CheckpointError`` when the PPO baseline's observations are not this run's (e.g. it
    was trained with another lookback): its network could not read the evaluation env."""
    from metatrade.errors import CheckpointError
    from metatrade.market import TradingEnv

    space = TradingEnv(arrays, make_env_config(cfg)).observation_space
    want = tuple(space.shape or ())  # a Box: its shape is set
    have = tuple(agent.observation_space.shape)
    if have != want:
        lookback, width = cfg.env.lookback, arrays.num_features
        raise CheckpointError(
            f"PPO baseline {path or '(given agent)'}: observations of {have[0]} values, but this "
            f"run's env gives {want[0]} (lookback {lookback} x {width} features + 4 account "
            "values); pass --ppo an agent trained with this run's config (metatrade train)"
        )


def load_ppo_agent(path: str | Path) -> PPOAgent:
    from metatrade.agents.ppo import PPOAgent

    return PPOAgent.load_model(path)
