"""The meta-test protocol's inner loop: how a start adapts to the held-out tasks.

One function, used by ``MetaTestProtocol.run`` (``evaluate``) and by ``MetaTestProtocol.adapt``
(``metatrade adapt`` and ``backtest -k``), so every command adapts a start on the same data
with the same streams: the same checkpoint, seed and k give the same adapted parameters.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.protocol_config import Params, ProtocolConfig, Start
from metatrade.evaluation.protocol_rollouts import feasible_length, stream_seed
from metatrade.exact.objective import exact_loss
from metatrade.exact.windows import latest_windows
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.adapt import adapt_on_batch, adapt_online
from metatrade.meta.inner import expand_to_tasks
from metatrade.meta.objective import per_task_losses


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
    the tasks' adaptation split: fresh episodes per step (sampled estimator), or the
    ``adaptation_episodes`` windows that end at the split's last bar (exact). ``curve``
    (if given) receives the mean return after k = 0..max(k) steps (exact: minus the
    loss); measuring it draws one more batch after the last step, changing nothing
    before it."""
    max_k = max(cfg.adaptation_steps)
    params = expand_to_tasks({k: v.detach() for k, v in start.params.items()}, len(arrays))
    adaptation = replace(cfg.adaptation, episodes_per_task=cfg.adaptation_episodes)
    if adaptation.estimator == "exact":
        windows = latest_windows(
            arrays,
            num_windows=cfg.adaptation_episodes,
            config=train_cfg,
            vol_bars=cfg.objective.vol_bars,
            dtype=next(iter(params.values())).dtype,
        )
        loss = partial(exact_loss, normalize=cfg.objective.normalize, risk=cfg.objective.risk)
        steps = adapt_on_batch(
            start.policy,
            params,
            windows,
            config=adaptation,
            loss=loss,
            num_steps=max_k,
            inner_lrs=start.inner_lrs,
        )
        if curve is not None:
            with torch.no_grad():
                for p in steps:
                    curve.append(-per_task_losses(start.policy, p, windows, loss).mean().item())
        return {k: steps[k] for k in cfg.adaptation_steps}
    gen = torch.Generator().manual_seed(stream_seed(cfg.seed, label, "adapt"))
    env_seed = stream_seed(cfg.seed, label, "env")
    train_env = BatchTradingEnv(arrays, cfg.adaptation_episodes, train_cfg, seed=env_seed)
    # k inner steps, each on fresh adaptation-window episodes of the current policy;
    # step k's batch resets the env with seed cfg.seed + 100 k.
    result = adapt_online(
        start.policy,
        params,
        train_env,
        config=adaptation,
        num_steps=max_k,
        inner_lrs=start.inner_lrs,
        generator=gen,
        measure_final=curve is not None,
        env_seed=lambda j: cfg.seed + 100 * (j + 1),
        keep=cfg.adaptation_steps,
    )
    if curve is not None:
        curve += result.returns
    return result.snapshots
