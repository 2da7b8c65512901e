"""How a start is adapted on one fold's adaptation window: a pluggable ``Adapter``.

The walk-forward protocol only needs "k inner steps from these parameters, on these rows
of this task": any gradient estimator fits behind one small protocol. ``SampledAdapter``
is the sampled policy-gradient inner loop of the MAML paper's test protocol
(``metatrade.meta.adapt.adapt_online``: each step on fresh episodes of the current
adapted policy, baseline refitted per batch; Finn et al., 2017, section 5.3). ``ExactAdapter``
is the exact expected-P&L gradient (``metatrade.exact``) on the window's latest bars.

Every job is adapted with its own seed (``job_seed``: run seed, start label, task and
the fold's first decision row), so a fold's adapted parameters do not depend on which
other tasks, starts or folds ran in the same evaluation: ``metatrade signal`` on a file
cut at that fold reproduces them exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from metatrade.data.task_arrays import TaskArrays
from metatrade.errors import ConfigError
from metatrade.evaluation.protocol import Start
from metatrade.exact.objective import exact_loss
from metatrade.exact.settings import ObjectiveSettings
from metatrade.exact.windows import latest_windows
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.adapt import adapt_on_batch, adapt_online
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.inner import expand_to_tasks

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


def _adaptation_rows(
    arrays: TaskArrays, rows: tuple[int, int], env: TradingEnvConfig, episode_length: int
) -> tuple[TaskArrays, TradingEnvConfig]:
    """The task with an "adapt" split of ``rows`` and an env config whose episodes fit in it
    (``episode_length`` cut to the window, observations may look back before it)."""
    lo, hi = rows
    horizon = min(episode_length, hi - max(lo, env.lookback - 1) - 1)
    if horizon < 1:
        raise ConfigError(
            f"task {arrays.task}: adaptation rows [{lo}, {hi}) leave no episode with "
            f"lookback {env.lookback}; raise --adapt-bars"
        )
    ta = replace(arrays, splits={**arrays.splits, "adapt": (lo, hi)})
    return ta, env.with_overrides(split="adapt", episode_length=horizon)


@dataclass(frozen=True)
class SampledAdapter:
    """k first-order policy-gradient steps on sampled episodes of the adaptation rows, with
    the run's inner loop (``adaptation``: step sizes, surrogate, advantages, episodes per
    step); episodes are ``env.episode_length`` bars, cut to fit the window."""

    env: TradingEnvConfig
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    steps: int = 1

    def __post_init__(self) -> None:
        if self.steps < 0 or self.env.episode_length is None:
            raise ValueError(
                f"SampledAdapter steps={self.steps} (>= 0) and an env episode_length "
                f"(got {self.env.episode_length})"
            )

    def __call__(
        self, start: Start, arrays: TaskArrays, rows: tuple[int, int], *, seed: int
    ) -> list[Params]:
        if self.steps == 0:
            return []
        ta, cfg = _adaptation_rows(arrays, rows, self.env, self.env.episode_length)
        env = BatchTradingEnv([ta], self.adaptation.episodes_per_task, cfg, seed=seed)
        result = adapt_online(
            start.policy,
            expand_to_tasks(start.params, 1),
            env,
            config=self.adaptation,
            num_steps=self.steps,
            inner_lrs=start.inner_lrs,
            generator=torch.Generator().manual_seed(seed),
            measure_final=False,
            env_seed=lambda k: seed + 7919 * (k + 1),
            keep=range(1, self.steps + 1),
        )
        return [{n: v[0] for n, v in result.snapshots[k].items()} for k in range(1, self.steps + 1)]


@dataclass(frozen=True)
class ExactAdapter:
    """k first-order steps of the exact expected-P&L objective (``metatrade.exact``) on the
    ``adaptation.episodes_per_task`` most recent windows of ``env.episode_length`` bars that
    end at the window's last row: no sampling, so no seed is used."""

    env: TradingEnvConfig
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    steps: int = 1

    def __call__(
        self, start: Start, arrays: TaskArrays, rows: tuple[int, int], *, seed: int
    ) -> list[Params]:
        if self.steps == 0:
            return []
        ta, cfg = _adaptation_rows(arrays, rows, self.env, self.env.episode_length)
        dtype = next(iter(start.params.values())).dtype
        windows = latest_windows(
            [ta],
            num_windows=self.adaptation.episodes_per_task,
            config=cfg,
            vol_bars=self.objective.vol_bars,
            dtype=dtype,
        )
        loss = partial(exact_loss, normalize=self.objective.normalize, risk=self.objective.risk)
        steps = adapt_on_batch(
            start.policy,
            expand_to_tasks(start.params, 1),
            windows,
            config=self.adaptation,
            loss=loss,
            num_steps=self.steps,
            inner_lrs=start.inner_lrs,
        )
        return [{n: v[0] for n, v in p.items()} for p in steps[1:]]
