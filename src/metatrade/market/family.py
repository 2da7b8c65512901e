"""TradingTaskFamily: (instrument, timeframe) tasks of a DataLoader as a meta-RL TaskFamily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from metatrade.data.task_arrays import TaskArrays
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig


class TaskSource(Protocol):
    """What the family needs from ``metatrade.data.DataLoader``."""

    def sample_tasks(self, n: int, rng: Any = None, split: str = "train") -> list[Any]: ...

    def get_task_arrays(self, instrument: str, timeframe: str) -> TaskArrays: ...


class TradingTaskFamily:
    """Implements ``metatrade.meta.protocols.TaskFamily`` over a DataLoader.

    Two different splits meet here: ``sample_tasks(split=...)`` is the *task* split
    (held-out instruments/timeframes never appear in "train"), while ``period`` is the
    *time* split the episodes trade in ("train", "validation", "test" rows of each task).

    Args:
        loader: a ``DataLoader`` (anything with ``sample_tasks`` and ``get_task_arrays``).
        env_config: the trading MDP (its ``split`` is replaced by ``period``).
        period: time split of every env this family builds.
        seed: seeds the episode-start generator of each env built (``reset(seed)`` reseeds).
    """

    def __init__(
        self,
        loader: TaskSource,
        env_config: TradingEnvConfig | None = None,
        period: str = "train",
        seed: int | None = None,
    ) -> None:
        self.loader = loader
        self.env_config = (env_config or TradingEnvConfig()).with_overrides(split=period)
        self.period = period
        self.seed = seed

    def sample_tasks(self, n: int, split: str, rng: np.random.Generator) -> list[Any]:
        """``n`` tasks of the task split ``split`` ("train" or "test"), drawn with ``rng``."""
        return self.loader.sample_tasks(n, rng=rng, split=split)

    def make_batch_env(self, tasks: Sequence[Any], episodes_per_task: int) -> BatchTradingEnv:
        """A BatchTradingEnv with one row per task, trading the ``period`` rows of each."""
        arrays = [self.loader.get_task_arrays(*task) for task in tasks]
        return BatchTradingEnv(arrays, episodes_per_task, self.env_config, seed=self.seed)
