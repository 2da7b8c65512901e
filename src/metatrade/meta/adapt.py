"""Adaptation as users call it: on fixed episodes (``adapt``) or online (``adapt_online``).

Both are thin uses of the one inner loop (``meta.inner.inner_loop``). ``adapt`` is
learn2learn's ``adapt(loss)`` verb over parameter dicts: K steps on one stored batch.
``adapt_online`` is the paper's test protocol: k first-order steps without an outer graph,
each on fresh episodes sampled with the current adapted policies, the baseline refitted on
each batch. Every evaluation path (``MetaLearner.evaluate_adaptation``, ``MAMLAgent.adapt``,
``metatrade adapt`` / ``backtest``, the meta-test protocol) adapts through it, with the
run's ``AdaptationConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from metatrade.meta.advantages import compute_advantages
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.inner import TaskLoss, expand_to_tasks, inner_loop
from metatrade.meta.protocols import BatchEnv
from metatrade.meta.sampler import sample_batch
from metatrade.meta.surrogates import Surrogate

Params = dict[str, Tensor]


def adapt(
    policy: nn.Module,
    params: Params,
    episodes: Episodes,
    *,
    num_steps: int = 1,
    lr: float | Sequence[float] = 0.1,
    second_order: bool = True,
    surrogate: str | Surrogate = "vpg",
    inner_lrs: Params | None = None,
    gamma: float = 0.99,
) -> Params:
    """theta'_i for every task of ``episodes`` after ``num_steps`` steps on that batch.

    Args:
        policy: the policy module (used only through ``functional_call``).
        params: meta-parameters theta (no task axis).
        episodes: pre-update episodes [T, E, H, ...] with advantages computed.
        num_steps: inner gradient steps, all on ``episodes``.
        lr: inner step size alpha, or one per step (the last repeating).
        second_order: differentiable in ``params`` through the inner gradient (MAML); False
            drops that term (FOMAML).
        surrogate: "vpg", "dice", "lvc" or a callable ``(policy, params, episodes) -> loss``.
        inner_lrs: Meta-SGD per-parameter step sizes (Li et al., 2017).
        gamma: discount, used by the ``dice`` surrogate.

    Returns:
        dict of tensors shaped [T, *param_shape]. ``params`` is never modified.

    Example::

        ep = compute_advantages(sample_episodes(policy, theta_T, env), gamma=0.99, gae_lambda=1)
        adapted = adapt(policy, theta, ep, lr=0.1)          # {name: [T, ...]}
        outer_loss(policy, adapted, post).backward()         # reaches theta (second order)
    """
    sizes = (float(lr),) if isinstance(lr, int | float) else tuple(lr)
    config = AdaptationConfig(
        num_inner_steps=num_steps,
        inner_step_sizes=sizes,
        surrogate=surrogate if isinstance(surrogate, str) else "vpg",
        gamma=gamma,
    )
    steps = inner_loop(
        policy,
        expand_to_tasks(params, episodes.num_tasks),
        lambda k, current: episodes,
        config=config,
        second_order=second_order,
        inner_lrs=inner_lrs,
        loss=None if isinstance(surrogate, str) else surrogate,
    )
    return steps[-1]


def sample_for_inner_loop(
    policy: nn.Module,
    params: Params,
    batch_env: BatchEnv,
    *,
    config: AdaptationConfig,
    generator: torch.Generator | None,
    seed: int | None = None,
) -> Episodes:
    """One batch of ``batch_env`` sampled with ``params`` [T, ...], advantages computed as
    ``config`` says (the baseline refitted on this batch)."""
    batch = sample_by_config(
        policy, params, batch_env, config=config, generator=generator, seed=seed
    )
    return with_advantages(batch, config=config)


def sample_by_config(
    policy: nn.Module,
    params: Params,
    batch_env: BatchEnv,
    *,
    config: AdaptationConfig,
    generator: torch.Generator | None,
    seed: int | None = None,
) -> Episodes:
    """One batch, sized as ``config`` says (episodes or a step budget, rollout length)."""
    return sample_batch(
        policy,
        params,
        batch_env,
        steps_per_task=config.steps_per_task,
        num_steps=config.num_steps,
        generator=generator,
        seed=seed,
    )


def with_advantages(batch: Episodes, *, config: AdaptationConfig) -> Episodes:
    """``batch`` with the baseline refitted on it and advantages as ``config`` says."""
    return compute_advantages(
        batch,
        config.gamma,
        config.gae_lambda,
        normalize_advantages=config.normalize_advantages,
        baseline_obs_dims=config.baseline_obs_dims,
    )


class OnlineAdaptation(NamedTuple):
    """What ``adapt_online`` returns."""

    params: Params
    """adapted parameters, every tensor [T, *param_shape]"""
    returns: list[float]
    """``returns[k]``: mean episode return of the batch sampled after k steps"""
    snapshots: dict[int, Params]
    """parameters [T, ...] after k steps, for each k asked for in ``keep``"""
    task_returns: list[Tensor]
    """``task_returns[k]``: [T] mean episode return of each task's batch after k steps (their
    mean is ``returns[k]`` up to rounding); for intervals across tasks"""


def adapt_online(
    policy: nn.Module,
    params: Params,
    batch_env: BatchEnv,
    *,
    config: AdaptationConfig,
    num_steps: int | None = None,
    inner_lrs: Params | None = None,
    generator: torch.Generator | None = None,
    measure_final: bool = True,
    env_seed: Callable[[int], int | None] | None = None,
    keep: Collection[int] = (),
) -> OnlineAdaptation:
    """Test-time adaptation: k first-order inner steps, step k on a fresh batch of
    ``batch_env`` sampled with the parameters after k steps. Runs under ``no_grad``;
    ``params`` are never modified.

    Args:
        policy, params: the start, [T, ...] (``expand_to_tasks`` for theta).
        batch_env: the T tasks to adapt to, E episodes each per step.
        config: the inner loop's settings (step sizes, surrogate, advantages, batch size).
        num_steps: inner steps (default ``config.num_inner_steps``; 0: no step).
        inner_lrs: Meta-SGD step sizes (used detached).
        generator: action noise and env reset seeds, drawn in sampling order.
        measure_final: also sample one batch after the last step, so ``returns`` has
            ``num_steps + 1`` entries; False saves that rollout.
        env_seed: ``k -> reset seed`` of the batch sampled after k steps (None: drawn from
            ``generator``), e.g. to give every start the same adaptation episodes.
        keep: step counts whose parameters go in ``snapshots``.
    """
    num_steps = config.num_inner_steps if num_steps is None else num_steps
    config = replace(config, num_inner_steps=num_steps, reuse_inner_batch=False)
    lrs = None if inner_lrs is None else {k: v.detach() for k, v in inner_lrs.items()}
    task_returns: list[Tensor] = []

    def measured_batch(k: int, current: Params) -> Episodes:
        seed = None if env_seed is None else env_seed(k)
        batch = sample_by_config(
            policy, current, batch_env, config=config, generator=generator, seed=seed
        )
        task_returns.append(batch.task_mean_returns())  # [T]
        return batch

    def batch_for_step(k: int, current: Params) -> Episodes:
        return with_advantages(measured_batch(k, current), config=config)

    with torch.no_grad():
        start = {k: v.detach() for k, v in params.items()}
        steps = inner_loop(
            policy, start, batch_for_step, config=config, second_order=False, inner_lrs=lrs
        )
        if measure_final:  # measured only: no step follows, so no baseline fit
            measured_batch(num_steps, steps[-1])
    snapshots = {k: steps[k] for k in keep if k <= num_steps}
    returns = [r.mean().item() for r in task_returns]
    return OnlineAdaptation(steps[-1], returns, snapshots, task_returns)


def adapt_on_batch(
    policy: nn.Module,
    params: Params,
    batch: Any,
    *,
    config: AdaptationConfig,
    loss: TaskLoss,
    num_steps: int | None = None,
    inner_lrs: Params | None = None,
) -> list[Params]:
    """Test-time adaptation on one fixed batch (the exact estimator: a task's most recent
    windows): the parameters [T, ...] after 0, 1, ..., k first-order steps of ``loss``.
    The same inner loop as meta-training; ``params`` are never modified."""
    lrs = None if inner_lrs is None else {k: v.detach() for k, v in inner_lrs.items()}
    with torch.no_grad():
        return inner_loop(
            policy,
            {k: v.detach() for k, v in params.items()},
            lambda k, current: batch,
            config=config,
            second_order=False,
            inner_lrs=lrs,
            loss=loss,
            num_steps=num_steps,
        )
