"""The meta-test protocol's inner loop: how a start adapts to the held-out tasks.

One function, used by ``MetaTestProtocol.run`` (``evaluate``) and by ``MetaTestProtocol.adapt``
(``metatrade adapt`` and ``backtest -k``), so every command adapts a start on the same data
with the same streams: the same checkpoint, seed and k give the same adapted parameters. The
batches come from the run's estimator (``metatrade.meta.estimators.make_source``), the steps
from the one inner loop (``metatrade.meta.adapt.adapt``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from metatrade.data.task_arrays import TaskArrays
from metatrade.envs.trading import TradingTaskFamily
from metatrade.evaluation.protocol_config import Params, ProtocolConfig, Start
from metatrade.evaluation.protocol_rollouts import feasible_length
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.adapt import adapt_at_test_time
from metatrade.meta.estimators import make_source, measured_returns
from metatrade.seeding import derive_seed


def adaptation_env(cfg: ProtocolConfig, arrays: list[TaskArrays]) -> TradingEnvConfig:
    """The env every start adapts in: the adaptation split, episodes that fit every task."""
    adapt_len = min(cfg.episode_length, feasible_length(arrays, cfg.env, cfg.adaptation_split))
    return cfg.env.with_overrides(split=cfg.adaptation_split, episode_length=adapt_len)


def adapt_start(
    cfg: ProtocolConfig,
    label: str,
    start: Start,
    arrays: list[TaskArrays],
    train_cfg: TradingEnvConfig,
    *,
    curve: list[float] | None = None,
) -> dict[int, Params]:
    """Parameters [T, ...] of ``start`` after each k in ``adaptation_steps`` inner steps on
    the tasks' adaptation split: fresh episodes per step (sampled estimator; step k's batch
    resets the envs from ``derive_seed(cfg.seed, "protocol", "adaptation")``, the same for
    every start, and ``label``'s actions have their own stream), or the ``adaptation_episodes``
    windows that end at the split's last bar (exact). ``curve`` (if given) receives the mean
    return after k = 0..max(k) steps (exact: minus the loss); measuring it draws one more
    batch after the last step, changing nothing before it."""
    family, tasks = TradingTaskFamily.of_arrays(
        arrays,
        train_cfg,
        seed=derive_seed(cfg.seed, "protocol", "env", label),
        objective=cfg.objective,
    )
    adaptation = replace(cfg.adaptation, episodes_per_task=cfg.adaptation_episodes)
    source = make_source(
        start.policy,
        family,
        tasks,
        config=adaptation,
        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "protocol", "adapt", label)),
        test_time=True,
        reset_seed=derive_seed(cfg.seed, "protocol", "adaptation"),
    )
    steps = adapt_at_test_time(
        start.policy,
        start.params,
        source,
        config=adaptation,
        num_tasks=len(arrays),
        inner_lrs=start.inner_lrs,
        num_steps=max(cfg.adaptation_steps),
    )
    with torch.no_grad():
        if curve is not None:
            curve += [r.mean().item() for r in measured_returns(source, steps)]
    return {k: steps[k] for k in cfg.adaptation_steps}
