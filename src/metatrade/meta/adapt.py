"""The inner loop: every task of a meta-batch adapted at once, differentiably.

theta'_i = theta - alpha * grad L_i(theta) (Finn et al., 2017, eq. 1), for all tasks i at
once: theta is broadcast to a task axis [T, ...], the T losses are computed in one
``vmap`` over tasks, and one ``autograd.grad`` of their sum with respect to the broadcast
copy gives every task's gradient in its own slice (tasks are independent, so no slice sees
another task's loss). The result is an ordinary function of the meta-parameters: when they
require grad, backpropagating a loss of theta' reaches theta through the inner gradient
(second order), unless ``first_order`` stops it there (FOMAML: d theta'/d theta = I).
Plain autograd rather than ``vmap(grad(...))``: same values, and the second-order graph it
leaves is cheaper to backpropagate through (TRPO's Fisher products run through it ten
times per meta-iteration).

``adapt_online`` is the test-time counterpart (the paper's test protocol): k first-order
steps without an outer graph, each on fresh episodes sampled with the current adapted
policies, the baseline refitted on each batch. Every evaluation path (``MetaLearner.
evaluate_adaptation``, ``MAMLAgent.adapt``, ``metatrade adapt`` / ``backtest``, the
meta-test protocol) adapts through it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import vmap

from metatrade.meta.advantages import compute_advantages
from metatrade.meta.episodes import Episodes
from metatrade.meta.protocols import BatchEnv
from metatrade.meta.sampler import sample_batch
from metatrade.meta.surrogates import Surrogate, get_surrogate

Params = dict[str, Tensor]


def adapt(
    policy: nn.Module,
    params: Params,
    episodes: Episodes,
    num_steps: int = 1,
    lr: float | Sequence[float] = 0.1,
    first_order: bool = False,
    surrogate: str | Surrogate = "vpg",
    inner_lrs: Params | None = None,
    resample_fn: Callable[[Params], Episodes] | None = None,
    gamma: float = 0.99,
    per_task: bool = False,
) -> Params:
    """Adapted parameters for every task of ``episodes``.

    Args:
        policy: the policy module (used only through ``functional_call``).
        params: meta-parameters theta (no task axis), or per-task params [T, ...] if
            ``per_task`` (to continue adapting already adapted policies).
        episodes: pre-update episodes [T, E, H, ...] with advantages computed.
        num_steps: inner gradient steps.
        lr: inner step size alpha, or one per step (step k uses ``lr[k]``, the last one
            repeating); ignored for tensors named in ``inner_lrs``.
        first_order: drop the second-order terms (inner gradients detached).
        surrogate: "vpg", "dice", "lvc" or a callable ``(policy, params, episodes) -> loss``.
        inner_lrs: Meta-SGD (Li et al., 2017) per-parameter learning rates, same names and
            shapes as ``params`` (or broadcastable); learnable when they require grad.
        resample_fn: ``adapted_params [T, ...] -> Episodes``; when given, inner step k >= 1
            uses fresh episodes sampled with the current adapted policies (the paper's
            protocol); when None, every step reuses ``episodes``.
        gamma: discount, used by the ``dice`` surrogate.
        per_task: ``params`` already carry a leading [T] axis.

    Returns:
        dict of tensors shaped [T, *param_shape]. ``params`` is never modified.
    """
    loss_fn = get_surrogate(surrogate, gamma)

    def task_loss(p: Params, batch: dict[str, Tensor]) -> Tensor:
        return loss_fn(policy, p, Episodes.from_tensors(batch))

    sizes = (lr,) if isinstance(lr, int | float) else tuple(lr)
    current = params
    batch = episodes
    for step in range(num_steps):
        if step > 0 and resample_fn is not None:
            batch = resample_fn(current)
        grads = task_gradients(task_loss, current, batch, per_task or step > 0, first_order)
        step_size = sizes[min(step, len(sizes) - 1)]
        updated = {}
        for name, value in current.items():
            g = grads[name]
            alpha = inner_lrs[name] if inner_lrs is not None and name in inner_lrs else step_size
            # a shared tensor [*shape] minus a per-task step [T, *shape] broadcasts to [T, *shape]
            updated[name] = value - alpha * g
        current = updated
    if num_steps == 0 and not per_task:
        num_tasks = episodes.num_tasks
        current = {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}
    return current


def task_gradients(
    task_loss: Callable[[Params, dict[str, Tensor]], Tensor],
    params: Params,
    batch: Episodes,
    per_task: bool,
    first_order: bool,
) -> Params:
    """grad L_i(params_i) for every task i, each [T, *shape]; differentiable (create_graph)
    when grad mode is on, some param requires grad and not ``first_order``."""
    num_tasks = batch.num_tasks
    outer = torch.is_grad_enabled() and any(v.requires_grad for v in params.values())
    create_graph = outer and not first_order
    with torch.enable_grad():
        inputs = {}
        for name, value in params.items():
            if not (create_graph and value.requires_grad):
                value = value.detach()  # a new leaf: the caller's tensor is never touched
            if not per_task:
                value = value.expand(num_tasks, *value.shape)
            inputs[name] = value if value.requires_grad else value.requires_grad_()
        losses = vmap(task_loss)(inputs, batch.tensors())
        grads = torch.autograd.grad(
            losses.sum(), list(inputs.values()), create_graph=create_graph, allow_unused=True
        )
    return {
        name: torch.zeros_like(value) if g is None else g
        for (name, value), g in zip(inputs.items(), grads, strict=True)
    }


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
    num_steps: int,
    lr: float = 0.1,
    *,
    surrogate: str | Surrogate = "vpg",
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    normalize_advantages: bool = True,
    baseline_obs_dims: int | None = None,
    inner_lrs: Params | None = None,
    step_sizes: Sequence[float] | None = None,
    num_rollout_steps: int | None = None,
    steps_per_task: int | None = None,
    generator: torch.Generator | None = None,
    per_task: bool = False,
    measure_final: bool = True,
    env_seed: Callable[[int], int | None] | None = None,
    keep: Collection[int] = (),
) -> OnlineAdaptation:
    """Test-time adaptation: ``num_steps`` first-order inner steps, step k on a fresh batch
    of ``batch_env`` sampled with the parameters after k steps (advantages from a baseline
    refitted on that batch). Runs under ``no_grad``; ``params`` are never modified.

    Args:
        policy, params: the start (``params`` without a task axis, or [T, ...] if ``per_task``).
        batch_env: the T tasks to adapt to, E episodes each per step.
        num_steps: inner steps k (0: no step).
        lr: inner step size of every step (unless ``step_sizes``; Meta-SGD ``inner_lrs``
            override it for the tensors they name).
        surrogate, gamma, gae_lambda, normalize_advantages, baseline_obs_dims: as in training
            (``adapt``, ``compute_advantages``).
        step_sizes: step size of step 1, 2, ... (the last one repeats), e.g. (0.5, 0.25).
        num_rollout_steps: rollout length H (default: the env's episode length).
        steps_per_task: sample every batch by steps, not episodes: whole episodes until
            each task has this many steps (rllab's sampler, the MAML paper's protocol; see
            ``sample_episodes_for_steps``). None: one episode per slot of ``batch_env``.
        generator: action noise and env reset seeds, drawn in sampling order.
        measure_final: also sample one batch after the last step, so ``returns`` has
            ``num_steps + 1`` entries; False saves that rollout (``num_steps`` entries).
        env_seed: ``k -> reset seed`` of the batch sampled after k steps (None: drawn from
            ``generator``), e.g. to give every start the same adaptation episodes.
        keep: step counts whose parameters go in ``snapshots``.
    """
    num_tasks = batch_env.num_tasks
    sizes = tuple(step_sizes) if step_sizes else (lr,)
    lrs = None if inner_lrs is None else {k: v.detach() for k, v in inner_lrs.items()}
    current = {k: v.detach() for k, v in params.items()}

    def stacked(p: Params, with_tasks: bool) -> Params:
        return p if with_tasks else {k: v.expand(num_tasks, *v.shape) for k, v in p.items()}

    returns: list[float] = []
    task_returns: list[Tensor] = []
    snapshots: dict[int, Params] = {}
    with torch.no_grad():
        for k in range(num_steps + 1):
            if k in keep:
                snapshots[k] = stacked(current, per_task)
            if k == num_steps and not measure_final:
                break
            seed = None if env_seed is None else env_seed(k)
            batch = sample_batch(
                policy, current, batch_env, steps_per_task, num_rollout_steps, generator,
                per_task, seed,
            )  # fmt: skip
            task_means = batch.task_mean_returns()  # [T]
            task_returns.append(task_means)
            returns.append(task_means.mean().item())
            if k == num_steps:
                break
            batch = compute_advantages(
                batch, gamma, gae_lambda, normalize_advantages=normalize_advantages,
                baseline_obs_dims=baseline_obs_dims,
            )  # fmt: skip
            current = adapt(
                policy, current, batch, 1, sizes[min(k, len(sizes) - 1)], True, surrogate, lrs,
                gamma=gamma, per_task=per_task,
            )  # fmt: skip
            per_task = True
    return OnlineAdaptation(stacked(current, per_task), returns, snapshots, task_returns)
