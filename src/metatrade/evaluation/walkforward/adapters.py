"""How a start is adapted on one fold's adaptation window: a pluggable ``Adapter``.

The walk-forward protocol only needs "k inner steps from these parameters, on these rows
of this task": any gradient estimator fits behind one small protocol. ``SampledAdapter``
is the sampled policy-gradient inner loop of the MAML paper's test protocol
(``metatrade.meta.adapt.adapt_online``: each step on fresh episodes of the current
adapted policy, baseline refitted per batch; Finn et al., 2017, section 5.3). An exact
expected-P&L gradient estimator plugs in as one more class with the same ``__call__``.

Every job is adapted with its own seed (``job_seed``: run seed, start label, task and
the fold's first decision row), so a fold's adapted parameters do not depend on which
other tasks, starts or folds ran in the same evaluation: ``metatrade signal`` on a file
cut at that fold reproduces them exactly.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.protocol import Start
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.adapt import adapt_online

Params = dict[str, Tensor]


@runtime_checkable
class Adapter(Protocol):
    """``adapter(start, arrays, rows, seed=...) -> [params after 1, ..., steps steps]``.

    ``rows`` = [lo, hi): the only rows whose bars the adapter may trade or be rewarded on
    (observation windows may look back before ``lo``). Parameters have no task axis.
    """

    steps: int

    def __call__(
        self, start: Start, arrays: TaskArrays, rows: tuple[int, int], *, seed: int
    ) -> list[Params]: ...


def job_seed(seed: int, label: str, task: str, row: int) -> int:
    """A 31-bit seed for one (run seed, start label, task, decision row) job."""
    key = [seed, zlib.crc32(label.encode()), zlib.crc32(task.encode()), row]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint32)[0] >> 1)


@dataclass(frozen=True)
class SampledAdapter:
    """k first-order policy-gradient steps on sampled episodes of the adaptation rows.

    Args mirror ``adapt_online`` and the run's ``meta`` section; ``episode_length`` is cut
    to fit the window (W - 1 bars at most).
    """

    env: TradingEnvConfig
    steps: int = 1
    episodes: int = 16
    episode_length: int = 64
    inner_lr: float = 0.1
    step_sizes: Sequence[float] | None = None
    surrogate: str = "vpg"
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    baseline_obs_dims: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 0 or self.episodes < 1 or self.episode_length < 1:
            raise ValueError(
                f"SampledAdapter steps={self.steps} (>= 0), episodes={self.episodes} (>= 1), "
                f"episode_length={self.episode_length} (>= 1)"
            )

    def __call__(
        self, start: Start, arrays: TaskArrays, rows: tuple[int, int], *, seed: int
    ) -> list[Params]:
        if self.steps == 0:
            return []
        lo, hi = rows
        horizon = min(self.episode_length, hi - max(lo, self.env.lookback - 1) - 1)
        if horizon < 1:
            raise ValueError(
                f"task {arrays.task}: adaptation rows [{lo}, {hi}) leave no episode with "
                f"lookback {self.env.lookback}; raise --adapt-bars"
            )
        ta = replace(arrays, splits={**arrays.splits, "adapt": (lo, hi)})
        cfg = self.env.with_overrides(split="adapt", episode_length=horizon)
        env = BatchTradingEnv([ta], self.episodes, cfg, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        result = adapt_online(
            start.policy, start.params, env, self.steps, self.inner_lr,
            surrogate=self.surrogate, gamma=self.gamma, gae_lambda=self.gae_lambda,
            normalize_advantages=self.normalize_advantages,
            baseline_obs_dims=self.baseline_obs_dims, inner_lrs=start.inner_lrs,
            step_sizes=self.step_sizes, generator=gen, measure_final=False,
            env_seed=lambda k: seed + 7919 * (k + 1), keep=range(1, self.steps + 1),
        )  # fmt: skip
        return [{n: v[0] for n, v in result.snapshots[k].items()} for k in range(1, self.steps + 1)]
