"""The two small protocols through which the meta-RL core sees any environment.

Trading is one task family among others (2D navigation validates the core). Arrays are
shaped [tasks, episodes, ...] so that one call steps every environment of a meta-batch.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class BatchEnv(Protocol):
    """T tasks x E episodes stepped together.

    Autoreset: same-step. When an episode ends, the obs returned for that slot is the first
    observation of a fresh episode and ``info["final_obs"]`` ([T, E, *obs_shape]) holds the
    last one. Samplers that run a fixed horizon mask everything after the first end.
    """

    num_tasks: int
    episodes_per_task: int
    max_episode_steps: int
    observation_space: gym.spaces.Box  # of ONE environment, shape obs_shape
    action_space: gym.spaces.Space  # of ONE environment: Discrete(n) or Box(d,)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Returns obs float32 [T, E, *obs_shape]."""
        ...

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """actions [T, E] (discrete) or [T, E, d]; returns obs, reward [T, E] float32,
        terminated [T, E] bool, truncated [T, E] bool, info (arrays shaped [T, E, ...])."""
        ...


@runtime_checkable
class TaskFamily(Protocol):
    """A distribution over tasks and a factory of batched environments for them."""

    def sample_tasks(
        self, n: int, *, task_set: str = "train", rng: np.random.Generator | int | None = None
    ) -> list[Any]:
        """n tasks of a task set ("train" or "test": held-out tasks never appear in "train");
        a task *set*, not a time split of the tasks' data."""
        ...

    def make_batch_env(self, tasks: list[Any], episodes_per_task: int) -> BatchEnv:
        """A BatchEnv with len(tasks) task rows and ``episodes_per_task`` episodes each."""
        ...
