"""PPO's rollout storage (CleanRL layout ``[n_steps, N=T*E, ...]``) and the Gymnasium
autoreset rule that gives each step its true next observation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metatrade.agents.ppo_config import PPOConfig
from metatrade.meta.advantages import gae
from metatrade.meta.protocols import BatchEnv


@dataclass
class Rollout:
    """One PPO rollout, tensors shaped [n_steps, N=T*E, ...]; ``next_obs`` is the true next
    observation (``info["final_obs"]`` where the episode ended)."""

    obs: Tensor
    next_obs: Tensor
    actions: Tensor
    logprobs: Tensor
    rewards: Tensor
    terminated: Tensor
    dones: Tensor  # terminated | truncated
    episode_returns: list[float] = dataclasses.field(default_factory=list)
    episode_lengths: list[int] = dataclasses.field(default_factory=list)

    @classmethod
    def zeros(
        cls, steps: int, n: int, obs_dim: int, act_shape: tuple[int, ...], dtype: torch.dtype
    ) -> Rollout:
        """Empty storage for ``steps`` steps of ``n`` environments (integer actions when
        ``act_shape`` is ``()``, i.e. discrete)."""
        return cls(
            obs=torch.zeros(steps, n, obs_dim, dtype=dtype),
            next_obs=torch.zeros(steps, n, obs_dim, dtype=dtype),
            actions=torch.zeros(steps, n, *act_shape, dtype=dtype if act_shape else torch.long),
            logprobs=torch.zeros(steps, n, dtype=dtype),
            rewards=torch.zeros(steps, n, dtype=dtype),
            terminated=torch.zeros(steps, n, dtype=torch.bool),
            dones=torch.zeros(steps, n, dtype=torch.bool),
        )


def true_next_obs(
    env: BatchEnv, next_obs: np.ndarray, done: np.ndarray, info: dict[str, Any]
) -> np.ndarray:
    """``next_obs`` with ``info["final_obs"]`` where an episode ended: the env autoresets in
    the same step, and a truncated step bootstraps from V(the observation it ended on)."""
    if not done.any():
        return next_obs
    if "final_obs" not in info:
        raise ValueError(
            f"{type(env).__name__}.step ended an episode without info['final_obs']: "
            "BatchEnv autoresets in the same step and must return the last "
            "observation there (see metatrade.meta.protocols.BatchEnv)"
        )
    true_next = next_obs.copy()
    true_next[done] = info["final_obs"][done]
    return true_next


def rollout_advantages(
    rollout: Rollout, value: nn.Module, cfg: PPOConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """GAE advantages, lambda-returns and values of ``rollout``, each [n_steps, N].

    Uses ``metatrade.meta.advantages.gae`` (time on the last axis, hence the transposes):
    V(next_obs) is the bootstrap at truncation and ignored at termination.
    """
    with torch.no_grad():
        values = value(rollout.obs)
        next_values = value(rollout.next_obs)
        advantages, returns = gae(
            rollout.rewards.T * cfg.reward_scale,
            values.T,
            next_values.T,
            rollout.terminated.T,
            rollout.dones.T,
            cfg.gamma,
            cfg.gae_lambda,
        )
    return advantages.T, returns.T, values
