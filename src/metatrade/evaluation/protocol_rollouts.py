"""Rollouts of the meta-test protocol on test windows and whole-split backtests in the
ledger (a ``BatchTradingEnv`` with ``liquidate_at_end``: a position open at the end is closed
with the exit cost, as ``run_backtest`` does), policy and rule actors, and the per-start
random streams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from metatrade.agents.networks.base import Policy
from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.backtest import target_to_action
from metatrade.evaluation.protocol_config import Params, Start
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig, episode_bounds
from metatrade.meta.sampler import policy_forward
from metatrade.seeding import derive_seed


def feasible_length(arrays: Sequence[TaskArrays], cfg: TradingEnvConfig, split: str) -> int:
    """Longest episode that fits the split of every task (>= 1)."""
    lengths = []
    for a in arrays:
        first, last, stop = episode_bounds(a, cfg.with_overrides(split=split, episode_length=None))
        lengths.append(stop - 1 - first)
    return max(1, min(lengths))


def policy_actions(
    policy: Policy,
    params: Params,
    obs: np.ndarray,
    deterministic: bool,
    generators: Sequence[torch.Generator],
) -> np.ndarray:
    """Actions [R * T, E] of R stacked rows; row i samples with ``generators[i]`` alone, so
    its draws do not depend on which other rows share the batch."""
    dtype = next(iter(params.values())).dtype
    with torch.no_grad():
        out = policy_forward(policy, params, torch.as_tensor(obs, dtype=dtype))
        dist = policy.distribution
        if deterministic:
            return dist.mode(out).numpy()
        chunks = out.chunk(len(generators))
        act = torch.cat(
            [dist.sample(c, generator=g) for c, g in zip(chunks, generators, strict=True)]
        )
    return act.numpy()


def backtest_seed(seed: int, label: str, task: str) -> int:
    """The seed of one row's sampled whole-split backtest of one task: the protocol's
    backtest column and ``metatrade backtest`` (row ``MAML@k<k>``) draw the same actions."""
    return derive_seed(seed, "protocol", "backtest", label, task)


def rollout_returns(env: BatchTradingEnv, act, starts: np.ndarray | None) -> np.ndarray:
    """Return (final equity / C0 - 1) of each slot's first episode, [T, E], an open position
    liquidated at the last bar's close with the exit cost (``env`` has ``liquidate_at_end``).

    ``act(obs, env, position)`` gives actions [T, E]; ``starts`` [T, E] fixes the start bar
    of every slot (None: backtest mode, each split's first bar)."""
    if not env.config.liquidate_at_end:
        raise ValueError("rollout_returns: the env must liquidate at the end (liquidate_at_end)")
    obs = env.reset(starts=starts)
    shape = obs.shape[:2]
    done = np.zeros(shape, dtype=bool)
    final = np.zeros(shape)
    position = np.zeros(shape)
    capital = env.config.initial_capital
    for _ in range(env.max_episode_steps + 1):
        actions = act(obs, env, position)
        obs, _, terminated, truncated, info = env.step(actions)
        ending = (terminated | truncated) & ~done
        final[ending] = info["final_equity"][ending]
        position = info["position"]
        done |= ending
        if done.all():
            break
    if not done.all():
        raise RuntimeError("protocol rollout: episodes did not end within max_episode_steps")
    return final / capital - 1.0


def rule_actor(rules: Sequence[np.ndarray]):
    """Actions from per-task target positions [T][N_t] given the current bars, in the env's
    action space (``env.config.actions``: target positions are traded directly)."""
    width = max(len(r) for r in rules)
    table = np.zeros((len(rules), width), dtype=np.int8)
    for i, r in enumerate(rules):
        table[i, : len(r)] = r

    def act(obs: np.ndarray, env: BatchTradingEnv, position: np.ndarray) -> np.ndarray:
        targets = np.take_along_axis(table, env.bars, axis=1)
        return target_to_action(targets, position, env.config.actions)

    return act


def architecture_groups(
    starts: Mapping[str, Start], adapted: dict[tuple[str, int], Params]
) -> dict[str, list[tuple[str, nn.Module, Params]]]:
    """Rows ``(label@k, policy, params)`` grouped by architecture (spec and parameter
    shapes), so that each group runs as one batched env."""
    groups: dict[str, list[tuple[str, nn.Module, Params]]] = {}
    for (label, k), params in adapted.items():
        policy = starts[label].policy
        key = repr(getattr(policy, "spec", id(policy))) + repr(
            [(n, tuple(v.shape), v.dtype) for n, v in params.items()]
        )
        groups.setdefault(key, []).append((f"{label}@k{k}", policy, params))
    return groups
