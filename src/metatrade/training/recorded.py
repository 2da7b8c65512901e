"""The run config of a run started from Python objects (``Trainer(family, agent, ...)``).

A run made with the README's Python API has no YAML: its settings live in the objects it was
given. ``recorded_config`` reads them back into a ``RunConfig`` (data folder, held-out
tasks, splits, the trading env, the exact objective, the policy network, the meta-learner's
settings), so the run directory's ``config.yaml`` and its checkpoints describe the run that
actually happened and ``metatrade evaluate --checkpoint <run>`` rebuilds the same network on
the same data. Before issue #18 such a run recorded the defaults (lookback 32, episode 256,
nothing held out) and the CLI failed on it with a shape mismatch. A setting no config key
can express (a custom sizer, per-instrument costs) is recorded as the default with a
warning naming it.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, fields
from typing import Any

from metatrade.training.config import RunConfig, apply_overrides
from metatrade.training.sections import meta_section_from


def recorded_config(env: Any, agent: Any) -> RunConfig:
    """The ``RunConfig`` of a run of ``agent`` on ``env`` (a task family or a BatchEnv)."""
    flat: dict[str, Any] = {}
    flat.update(_data_settings(env))
    flat.update(_env_settings(getattr(env, "env_config", None) or getattr(env, "config", None)))
    if getattr(env, "max_episode_steps", None) is not None and "env.lookback" not in flat:
        flat["env.episode_length"] = int(env.max_episode_steps)  # nav2d: the horizon
    objective = getattr(env, "objective", None)
    if objective is not None:
        flat.update({f"objective.{k}": v for k, v in asdict(objective).items()})
    policy = agent if hasattr(agent, "spec") else getattr(agent, "policy", None)
    spec = getattr(policy, "spec", None)
    if isinstance(spec, dict):
        flat.update(_policy_settings(spec))
    flat.update(_ppo_settings(getattr(agent, "config", None)))
    cfg = apply_overrides(RunConfig(), flat)
    learner = getattr(agent, "learner", None)
    if learner is not None:  # a MAMLAgent: its MetaConfig is the meta section
        cfg = cfg.model_copy(update={"meta": meta_section_from(learner.config)})
        cfg = apply_overrides(cfg, {"run.seed": learner.config.seed})
    return cfg


def _data_settings(env: Any) -> dict[str, Any]:
    """``data.*`` from a trading family's loader (a DataLoader, or a TaskSubset of one)."""
    if type(env).__name__ == "Navigation2DFamily":
        return {"data.family": "nav2d"}
    source = getattr(env, "loader", None)
    loader = getattr(source, "loader", source)  # TaskSubset -> its DataLoader
    if loader is None or not hasattr(loader, "heldout"):
        return {}
    from metatrade.data.loader import SAMPLE_DIR

    held = loader.heldout
    out: dict[str, Any] = {
        "data.data_dir": None if loader.data_dir == SAMPLE_DIR else str(loader.data_dir),
        "data.heldout.instruments": list(held.instruments),
        "data.heldout.timeframes": [str(t) for t in held.timeframes],
        "data.heldout.tasks": [f"{i}:{tf}" for i, tf in held.tasks],
        "data.strict": bool(loader.strict),
        "data.timezone": loader.registry.timezone,
        "data.instruments": dict(loader.registry.overrides),
    }
    out.update(
        {f"data.splits.{f.name}": getattr(loader.splits, f.name) for f in fields(loader.splits)}
    )
    if source is not None and source is not loader:  # a TaskSubset: its tasks
        out["data.tasks"] = sorted(str(t) for t in source.tasks("all"))
    return out


def _env_settings(config: Any) -> dict[str, Any]:
    """``env.*`` from a ``TradingEnvConfig``: its ``EnvSettings`` and the sizer's fraction
    (warning for what no key can express)."""
    from metatrade.market import TradingEnvConfig
    from metatrade.market.config import EnvSettings
    from metatrade.market.sizing import FixedFractionSizer

    if not isinstance(config, TradingEnvConfig):
        return {}
    out: dict[str, Any] = {f"env.{f.name}": getattr(config, f.name) for f in fields(EnvSettings)}
    if config.episode_length is None:
        del out["env.episode_length"]  # a backtest's; the section keeps its default
    if config.spec is not None:
        _unrecorded(f"the lot specification {config.spec!r} (TradingEnvConfig.spec)")
    if isinstance(config.sizer, FixedFractionSizer):
        out["env.position_fraction"] = config.sizer.fraction
    else:
        _unrecorded(f"the sizer {type(config.sizer).__name__}")
    if config.instruments:
        _unrecorded("per-instrument costs (TradingEnvConfig.instruments)")
    return out


def _policy_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """``policy.*`` from a policy's ``spec`` (``metatrade.agents.policies``)."""
    keys = ("kind", "hidden_sizes", "activation", "num_experts", "init_log_std")
    return {f"policy.{k}": spec[k] for k in keys if k in spec}


def _ppo_settings(config: Any) -> dict[str, Any]:
    """``ppo.*`` and ``run.seed`` from a ``PPOAgent``'s ``PPOConfig``."""
    from metatrade.agents.ppo_config import PPOConfig, PPOHyperparameters

    if not isinstance(config, PPOConfig):
        return {}
    out = {f"ppo.{f.name}": getattr(config, f.name) for f in fields(PPOHyperparameters)}
    return {**out, "run.seed": config.seed}


def _unrecorded(what: str) -> None:
    warnings.warn(
        f"the run config cannot record {what}: config.yaml holds the default instead, so "
        "`metatrade evaluate` on this run would not use it; pass Trainer(config=...) built "
        "from a YAML config to record every setting",
        stacklevel=3,
    )
