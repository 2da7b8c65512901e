"""2D navigation, the MAML paper's continuous-control validation task (Finn et al., 2017, 5.3).

Matches pytorch-maml-rl's ``2DNavigation-v0`` (``maml_rl/envs/navigation.py``) and its
config ``configs/maml/2d-navigation.yaml``. ``normalized_actions=True`` gives the original
rllab code's view of the same env (``normalize(PointEnvRandGoal())``): the policy acts in
[-1, 1], scaled to [-0.1, 0.1], so a unit-std Gaussian is not mostly clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

MAX_STEP = 0.1
"""largest move per step along each axis"""


@dataclass(frozen=True)
class NavTask:
    """One task: the goal position (x, y)."""

    goal: tuple[float, float]


class Navigation2DBatchEnv:
    """T goals x E point agents, stepped together in numpy.

    Description:
        A point agent starts at the origin and must move to a task-specific goal.
    Action Space:
        ``Box(-0.1, 0.1, (2,), float32)``: a displacement (dx, dy); actions outside are
        clipped to [-0.1, 0.1] (the policy's Gaussian is unbounded). With
        ``normalized_actions``: ``Box(-1, 1, (2,))``, clipped to [-1, 1] and scaled by 0.1
        (rllab's ``normalize`` wrapper, as in the MAML paper's own code).
    Observation Space:
        ``Box(-inf, inf, (2,), float32)``: | 0 | x | 1 | y | (the position after the step).
    Rewards:
        r_t = -|| position_{t+1} - goal ||_2.
    Starting State:
        position (0, 0).
    Episode End:
        terminated when |x - gx| < 0.01 and |y - gy| < 0.01 (goal reached);
        truncated after ``max_episode_steps`` = 100 steps.
    Autoreset:
        same-step: the slot's returned obs is the fresh start (0, 0) and
        ``info["final_obs"]`` holds the last position (see ``meta.protocols.BatchEnv``).
    """

    def __init__(
        self,
        goals: np.ndarray,
        episodes_per_task: int,
        max_episode_steps: int = 100,
        normalized_actions: bool = False,
    ) -> None:
        goals = np.asarray(goals, dtype=np.float64)
        if goals.ndim != 2 or goals.shape[1] != 2:
            raise ValueError(
                f"Navigation2DBatchEnv: goals must be [T, 2], got shape {goals.shape}."
            )
        self.goals = goals
        self.num_tasks = goals.shape[0]
        self.episodes_per_task = int(episodes_per_task)
        self.max_episode_steps = int(max_episode_steps)
        # typed as BatchEnv declares them (settable protocol members must match exactly)
        self.observation_space: gym.spaces.Box = gym.spaces.Box(
            -np.inf, np.inf, shape=(2,), dtype=np.float32
        )
        bound = 1.0 if normalized_actions else MAX_STEP
        self.action_space: gym.spaces.Space = gym.spaces.Box(-bound, bound, (2,), np.float32)
        self._action_bound = bound
        self._pos = np.zeros((self.num_tasks, self.episodes_per_task, 2))
        self._t = np.zeros((self.num_tasks, self.episodes_per_task), dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """All slots back to the origin (the start state is deterministic; seed unused)."""
        self._pos[:] = 0.0
        self._t[:] = 0
        return self._pos.astype(np.float32)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions, dtype=np.float64)
        expected = (self.num_tasks, self.episodes_per_task, 2)
        if actions.shape != expected:
            raise ValueError(
                f"Navigation2DBatchEnv.step: actions shape {actions.shape}, expected {expected}."
            )
        bound = self._action_bound
        self._pos = self._pos + np.clip(actions, -bound, bound) * (MAX_STEP / bound)
        self._t += 1
        diff = self._pos - self.goals[:, None, :]
        reward = -np.sqrt((diff**2).sum(-1))
        terminated = (np.abs(diff) < 0.01).all(-1)
        truncated = (self._t >= self.max_episode_steps) & ~terminated
        final_obs = self._pos.astype(np.float32)
        done = terminated | truncated
        self._pos[done] = 0.0
        self._t[done] = 0
        obs = self._pos.astype(np.float32)
        return obs, reward.astype(np.float32), terminated, truncated, {"final_obs": final_obs}


class Navigation2DFamily:
    """Goals uniform in [low, high]^2 (the paper: [-0.5, 0.5]^2).

    ``split`` only selects an independent random stream ("train"/"test"): continuous goals
    drawn from a continuous distribution never coincide, so test goals are unseen.
    """

    def __init__(
        self,
        low: float = -0.5,
        high: float = 0.5,
        max_episode_steps: int = 100,
        normalized_actions: bool = False,
    ) -> None:
        self.low, self.high = low, high
        self.max_episode_steps = max_episode_steps
        self.normalized_actions = normalized_actions

    def sample_tasks(
        self, n: int, *, task_set: str = "train", rng: np.random.Generator | int | None = None
    ) -> list[NavTask]:
        """``n`` goals uniform in the square; every task set draws from the same distribution
        (the tasks are continuous), so "test" goals are unseen by construction."""
        if task_set not in ("train", "test", "validation"):
            raise ValueError(
                f"Navigation2DFamily.sample_tasks: task_set={task_set!r}; use 'train' or 'test'."
            )
        goals = np.random.default_rng(rng).uniform(self.low, self.high, size=(n, 2))
        return [NavTask((float(g[0]), float(g[1]))) for g in goals]

    def make_batch_env(self, tasks: list[NavTask], episodes_per_task: int) -> Navigation2DBatchEnv:
        goals = np.array([t.goal for t in tasks], dtype=np.float64).reshape(-1, 2)
        return Navigation2DBatchEnv(
            goals, episodes_per_task, self.max_episode_steps, self.normalized_actions
        )
