"""TradingTaskFamily: (instrument, timeframe) tasks of a DataLoader as a meta-RL TaskFamily."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from metatrade.data.task_arrays import TaskArrays
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig


class TaskSource(Protocol):
    """What the family needs from ``metatrade.data.DataLoader``."""

    def sample_tasks(self, n: int, *, task_set: str = "train", rng: Any = None) -> list[Any]: ...

    def get_task_arrays(self, instrument: str, timeframe: str) -> TaskArrays: ...


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ObjectiveSettings:
    """How the exact expected-P&L objective (``metatrade.exact``) scores a window batch (the
    run config's ``objective`` section). The window length is the env's ``episode_length``;
    the window counts are the meta config's ``episodes_per_task`` / ``num_evaluation_episodes``
    (training) and the evaluation's ``adaptation_episodes`` (test-time adaptation)."""

    normalize: bool = Field(
        True, description="divide a window's P&L by its causal volatility x bars (tasks alike)"
    )
    risk: float = Field(0.0, ge=0, description="> 0: subtract risk x Var(P&L) (mean-variance)")
    gap_bars: int = Field(
        0, ge=0, description="bars between the adaptation windows and the evaluation windows"
    )
    vol_bars: int = Field(256, ge=2, description="bars of returns behind the causal volatility")


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
        from metatrade.exact.windows import sample_window_pairs

        cfg = self.env_config
        self._check_objective_env()
        arrays = [self.loader.get_task_arrays(*task) for task in tasks]
        return sample_window_pairs(
            arrays,
            window_bars=cfg.episode_length,
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
        from metatrade.exact.windows import latest_windows

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

    def _check_objective_env(self) -> None:
        cfg = self.env_config
        if cfg.observation != "position" or cfg.episode_length is None:
            raise ValueError(
                "the exact objective needs env.observation: position (the policy sees the "
                f"feature window and its position only) and an episode_length; got "
                f"observation={cfg.observation!r}, episode_length={cfg.episode_length}"
            )

    def objective_loss(self, policy: Any, params: Any, batch: Any) -> Any:
        """Minus the expected P&L of one task's windows (``metatrade.exact.exact_loss``)."""
        from metatrade.exact.objective import exact_loss

        return exact_loss(
            policy, params, batch, normalize=self.objective.normalize, risk=self.objective.risk
        )


class _GivenArrays:
    """A ``TaskSource`` over tasks already loaded (``TradingTaskFamily.of_arrays``)."""

    def __init__(self, arrays: Sequence[TaskArrays]) -> None:
        self.arrays: dict[tuple[str, str], TaskArrays] = {}
        for a in arrays:
            if self.arrays.setdefault(tuple(a.task), a) is not a:
                raise ValueError(f"task {a.task} given twice with different data")

    def sample_tasks(self, n: int, *, task_set: str = "train", rng: Any = None) -> list[Any]:
        return list(self.arrays)[:n]

    def get_task_arrays(self, instrument: str, timeframe: str) -> TaskArrays:
        return self.arrays[(instrument, timeframe)]
