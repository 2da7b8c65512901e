"""TradingTaskFamily: (instrument, timeframe) tasks of a DataLoader as a meta-RL TaskFamily.

Trading offers the core both of its faces: episodes in the market's envs (``metatrade.market``,
the ``sampled`` estimator) and the exact expected P&L of the same MDP (``metatrade.exact``).
It lives here, below both, so that ``market`` never imports ``exact`` (``exact`` reads the
market's rules and configs; docs/architecture.md, the import rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from metatrade.data.task_arrays import TaskArrays
from metatrade.exact.objective import exact_loss
from metatrade.exact.settings import ObjectiveSettings
from metatrade.exact.windows import latest_windows, sample_window_pairs
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig


class TaskSource(Protocol):
    """What the family needs from ``metatrade.data.DataLoader``."""

    def sample_tasks(self, n: int, *, task_set: str = "train", rng: Any = None) -> list[Any]: ...

    def get_task_arrays(self, instrument: str, timeframe: str) -> TaskArrays: ...


class TradingTaskFamily:
    """Implements ``metatrade.meta.protocols.TaskFamily`` over a DataLoader, and
    ``metatrade.meta.estimators.ObjectiveFamily`` (the exact expected P&L) when the env
    exposes the position-only observation.

    Two different things meet here: ``sample_tasks(task_set=...)`` picks from a *task set*
    (held-out instruments/timeframes never appear in "train"), while ``period`` is the
    *time split* the episodes trade in ("train", "validation", "test" rows of each task).

    Args:
        loader: a ``DataLoader`` (anything with ``sample_tasks`` and ``get_task_arrays``).
        env_config: the trading MDP (its ``split`` is replaced by ``period``).
        period: time split of every env this family builds.
        seed: seeds the episode-start generator of each env built (``reset(seed)`` reseeds).
        objective: the exact objective's settings (``meta.estimator: exact``).
    """

    def __init__(
        self,
        loader: TaskSource,
        env_config: TradingEnvConfig | None = None,
        period: str = "train",
        seed: int | None = None,
        objective: ObjectiveSettings | None = None,
    ) -> None:
        self.loader = loader
        self.objective = objective or ObjectiveSettings()
        self.env_config = (env_config or TradingEnvConfig()).with_overrides(split=period)
        self.period = period
        self.seed = seed

    @classmethod
    def of_arrays(
        cls,
        arrays: Sequence[TaskArrays],
        env_config: TradingEnvConfig,
        *,
        seed: int | None = None,
        objective: ObjectiveSettings | None = None,
    ) -> tuple[TradingTaskFamily, list[Any]]:
        """A family over tasks already loaded (their ``env_config.split`` rows: e.g. a
        fold's adaptation window) and its task list: what test-time adaptation builds its
        batches from (``metatrade.meta.estimators.make_source``)."""
        source = _GivenArrays(arrays)
        family = cls(source, env_config, env_config.split, seed=seed, objective=objective)
        return family, [a.task for a in arrays]

    def sample_tasks(
        self, n: int, *, task_set: str = "train", rng: np.random.Generator | int | None = None
    ) -> list[Any]:
        """``n`` tasks of the task set ``task_set`` ("train" or "test"), drawn with ``rng``."""
        return self.loader.sample_tasks(n, task_set=task_set, rng=rng)

    def make_batch_env(self, tasks: Sequence[Any], episodes_per_task: int) -> BatchTradingEnv:
        """A BatchTradingEnv with one row per task, trading the ``period`` rows of each."""
        arrays = [self.loader.get_task_arrays(*task) for task in tasks]
        return BatchTradingEnv(arrays, episodes_per_task, self.env_config, seed=self.seed)

    def objective_batches(
        self,
        tasks: Sequence[Any],
        *,
        num_windows: int,
        num_eval_windows: int,
        rng: np.random.Generator,
    ) -> tuple[Any, Any]:
        """(adaptation, evaluation) ``PnlWindows`` of ``tasks`` in the ``period`` rows: per
        task, ``num_windows`` back-to-back windows of ``episode_length`` bars ending at a
        random cut, and ``num_eval_windows`` windows from the cut (+ ``gap_bars``) on."""
        window_bars = self._check_objective_env()
        cfg = self.env_config
        arrays = [self.loader.get_task_arrays(*task) for task in tasks]
        return sample_window_pairs(
            arrays,
            window_bars=window_bars,
            num_windows=num_windows,
            num_eval_windows=num_eval_windows,
            gap=self.objective.gap_bars,
            config=cfg,
            rng=rng,
            vol_bars=self.objective.vol_bars,
        )

    def recent_objective_batch(
        self, tasks: Sequence[Any], *, num_windows: int, dtype: Any = None
    ) -> Any:
        """Per task, the ``num_windows`` (fewer if the period is short) back-to-back windows of
        ``episode_length`` bars that end at the ``period``'s last bar: what test-time
        adaptation with the exact objective adapts on (the most recent past). ``dtype``: the
        policy's (default float32)."""
        self._check_objective_env()
        arrays = [self.loader.get_task_arrays(*task) for task in tasks]
        extra = {} if dtype is None else {"dtype": dtype}
        return latest_windows(
            arrays,
            num_windows=num_windows,
            config=self.env_config,
            vol_bars=self.objective.vol_bars,
            **extra,
        )

    def _check_objective_env(self) -> int:
        """The windows' length (``episode_length``) once the env suits the exact objective."""
        cfg = self.env_config
        if cfg.observation != "position" or cfg.episode_length is None:
            raise ValueError(
                "the exact objective needs env.observation: position (the policy sees the "
                f"feature window and its position only) and an episode_length; got "
                f"observation={cfg.observation!r}, episode_length={cfg.episode_length}"
            )
        return cfg.episode_length

    def objective_loss(self, policy: Any, params: Any, batch: Any) -> Any:
        """Minus the expected P&L of one task's windows (``metatrade.exact.exact_loss``)."""
        return exact_loss(
            policy, params, batch, normalize=self.objective.normalize, risk=self.objective.risk
        )


class _GivenArrays:
    """A ``TaskSource`` over tasks already loaded (``TradingTaskFamily.of_arrays``)."""

    def __init__(self, arrays: Sequence[TaskArrays]) -> None:
        self.arrays: dict[tuple[str, str], TaskArrays] = {}
        for a in arrays:
            if self.arrays.setdefault((a.task.instrument, a.task.timeframe), a) is not a:
                raise ValueError(f"task {a.task} given twice with different data")

    def sample_tasks(self, n: int, *, task_set: str = "train", rng: Any = None) -> list[Any]:
        return list(self.arrays)[:n]

    def get_task_arrays(self, instrument: str, timeframe: str) -> TaskArrays:
        return self.arrays[(instrument, timeframe)]
