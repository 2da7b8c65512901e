"""How a start is adapted on one fold's adaptation window: a pluggable ``Adapter``.

The walk-forward protocol only needs "k inner steps from these parameters, on these rows
of this task": anything fits behind one small protocol. ``InnerLoopAdapter`` is the run's
own inner loop with its estimator: the sampled policy-gradient steps of the MAML paper's
test protocol (each step on fresh episodes of the current adapted policy, baseline refitted
per batch; Finn et al., 2017, section 5.3), or the exact expected-P&L gradient
(``metatrade.exact``) on the window's latest bars.

Every job is adapted with its own seed (``adaptation_seed``: derived from the run seed, the
start label, the task and the fold's first decision row), so a fold's adapted parameters do not depend on which
other tasks, starts or folds ran in the same evaluation: ``metatrade signal`` on a file
cut at that fold reproduces them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from metatrade.data.task_arrays import TaskArrays
from metatrade.envs.trading import TradingTaskFamily
from metatrade.errors import ConfigError
from metatrade.evaluation.protocol import Start
from metatrade.exact.settings import ObjectiveSettings
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.adapt import adapt_at_test_time
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.estimators import make_source
from metatrade.seeding import derive_seed

Params = dict[str, Tensor]


@runtime_checkable
class Adapter(Protocol):
    """``adapter(start, arrays, rows, seed=...) -> [params after 1, ..., steps steps]``.

    ``rows`` = [lo, hi): the only rows whose bars the adapter may trade or be rewarded on
    (observation windows may look back before ``lo``). Parameters have no task axis.
    """

    @property
    def steps(self) -> int:
        """k: how many steps (parameters after each are returned)."""
        ...

    def __call__(
        self, start: Start, arrays: TaskArrays, rows: tuple[int, int], *, seed: int
    ) -> list[Params]: ...


def adaptation_seed(run_seed: int, label: str, task: str, row: int) -> int:
    """The seed of one walk-forward job: start ``label`` adapted on ``task`` for the fold
    whose first decision row is ``row`` (the walk-forward, ``metatrade signal`` and the
    fan-out derive it alike, so a job's result does not depend on where it ran)."""
    return derive_seed(run_seed, "walkforward", label, task, row)


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
class InnerLoopAdapter:
    """k first-order steps of the run's inner loop (``adaptation``: estimator, step sizes,
    surrogate, advantages, episodes or windows per step) on a fold's adaptation rows; the
    batches come from ``metatrade.meta.estimators.make_source``, the steps from
    ``metatrade.meta.adapt.adapt``, as in meta-training and the meta-test protocol:

    * sampled: fresh episodes of ``env.episode_length`` bars (cut to fit the window) at
      every step, sampled with the current adapted policy (seeded by the job's seed);
    * exact: the ``adaptation.episodes_per_task`` most recent windows of
      ``env.episode_length`` bars that end at the window's last row (``objective``: how they
      are scored); no sampling, so no seed is used.
    """

    env: TradingEnvConfig
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    steps: int = 1

    def __post_init__(self) -> None:
        if self.steps < 0 or self.env.episode_length is None:
            raise ValueError(
                f"InnerLoopAdapter steps={self.steps} (>= 0) and an env episode_length "
                f"(got {self.env.episode_length})"
            )

    def __call__(
        self, start: Start, arrays: TaskArrays, rows: tuple[int, int], *, seed: int
    ) -> list[Params]:
        if self.steps == 0:
            return []
        length = self.env.episode_length or 0
        ta, cfg = _adaptation_rows(arrays, rows, self.env, length)
        family, tasks = TradingTaskFamily.of_arrays([ta], cfg, seed=seed, objective=self.objective)
        source = make_source(
            start.policy,
            family,
            tasks,
            config=self.adaptation,
            generator=torch.Generator().manual_seed(seed),
            test_time=True,
            reset_seed=seed,
        )
        steps = adapt_at_test_time(
            start.policy,
            start.params,
            source,
            config=self.adaptation,
            num_tasks=1,
            inner_lrs=start.inner_lrs,
            num_steps=self.steps,
        )
        return [{n: v[0] for n, v in p.items()} for p in steps[1:]]
