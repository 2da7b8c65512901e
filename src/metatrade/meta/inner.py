"""The one inner loop: every task of a meta-batch adapted at once, differentiably.

theta'_i = theta - alpha * grad L_i(theta) (Finn et al., 2017, eq. 1; Algorithm 3, line 7),
for all tasks i at once and for K steps. Parameters carry a task axis [T, ...] throughout:
the meta-parameters enter as a broadcast view (``expand_to_tasks``), the T losses are
computed in one ``vmap`` over tasks, and one ``autograd.grad`` of their sum with respect to
the [T, ...] tensors gives every task's gradient in its own slice (tasks are independent, so
no slice sees another task's loss). With ``second_order`` the result is a differentiable
function of theta: a loss of theta' backpropagates through the inner gradient; without it
the inner gradients are constants (FOMAML: d theta'/d theta = I).

Meta-training, TRPO's and ProMP's re-evaluations and test-time adaptation all call
``inner_loop``; they differ only in where step k's batch comes from (``batch_for_step``:
freshly sampled with the current adapted policies, or the batches stored when they were).
Plain autograd rather than ``vmap(grad(...))``: same values, and the second-order graph it
leaves is cheaper to backpropagate through (TRPO's Fisher products run through it ten times
per meta-iteration).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.func import vmap

from metatrade.meta.config import AdaptationConfig
from metatrade.meta.surrogates import get_surrogate

Params = dict[str, Tensor]


class Batch(Protocol):
    """What a per-task loss reads: episodes, or the exact objective's P&L windows."""

    @property
    def num_tasks(self) -> int: ...

    def tensors(self) -> dict[str, Tensor]:
        """Every field as a tensor with a leading [T] axis (the vmapped axis)."""
        ...

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> Any: ...


TaskLoss = Callable[[nn.Module, Params, Any], Tensor]
"""``(policy, params of one task, that task's batch) -> scalar loss``."""
BatchForStep = Callable[[int, Params], Any]
"""``(k, parameters after k steps [T, ...]) -> the batch of inner step k + 1``."""


def expand_to_tasks(params: Params, num_tasks: int) -> Params:
    """theta broadcast to [T, *shape]: a view (no copy) that stays differentiable in theta."""
    return {k: v.expand(num_tasks, *v.shape) for k, v in params.items()}


def task_gradients(
    task_loss: Callable[[Params, dict[str, Tensor]], Tensor],
    params: Params,
    batch: Batch,
    *,
    create_graph: bool,
    losses_out: list[Tensor] | None = None,
) -> Params:
    """grad L_i(params_i) for every task i, each [T, *shape] (params are [T, *shape]).

    With ``create_graph`` the gradients are differentiable in the params that require grad
    (the second-order term of the meta-gradient); otherwise they are constants.
    ``losses_out``: the T losses (detached) are appended to it (a log for free).
    """
    create_graph = create_graph and any(v.requires_grad for v in params.values())
    with torch.enable_grad():
        inputs = {}
        for name, value in params.items():
            if not (create_graph and value.requires_grad):
                value = value.detach().requires_grad_()  # a new leaf: the caller's is untouched
            inputs[name] = value
        losses = vmap(task_loss)(inputs, batch.tensors())
        if losses_out is not None:
            losses_out.append(losses.detach())
        grads = torch.autograd.grad(
            losses.sum(), list(inputs.values()), create_graph=create_graph, allow_unused=True
        )
    return {
        name: torch.zeros_like(value) if g is None else g
        for (name, value), g in zip(inputs.items(), grads, strict=True)
    }


def inner_loop(
    policy: nn.Module,
    params: Params,
    batch_for_step: BatchForStep,
    *,
    config: AdaptationConfig,
    second_order: bool,
    inner_lrs: Params | None = None,
    loss: TaskLoss | None = None,
    num_steps: int | None = None,
    losses_out: list[Tensor] | None = None,
) -> list[Params]:
    """The parameters after 0, 1, ..., K inner steps: ``[params, theta'_1, ..., theta'_K]``.

    Args:
        policy: the policy module (used only through ``functional_call`` by the loss).
        params: the start, [T, *shape] (theta through ``expand_to_tasks``, or adapted params).
        batch_for_step: ``(k, params after k steps) -> batch`` of step k + 1 (0-based k).
        config: step sizes (``config.step_size(k)``), surrogate and number of steps.
        second_order: keep the graph through the inner gradients (MAML) or not (FOMAML, and
            every adaptation nothing differentiates).
        inner_lrs: Meta-SGD per-parameter step sizes (Li et al., 2017), overriding
            ``config.step_size`` for the tensors they name; learnable when they require grad.
        loss: the per-task loss (default: ``config.surrogate``; ProMP re-adapts with "lvc",
            the exact estimator passes its expected-P&L loss).
        num_steps: K (default ``config.num_inner_steps``).
        losses_out: step k's per-task losses [T] (detached) are appended to it.

    ``params`` is never modified; every returned tensor is [T, *shape].
    """
    loss_fn = loss or get_surrogate(config.surrogate, config.gamma)
    steps = [params]
    for k in range(config.num_inner_steps if num_steps is None else num_steps):
        current = steps[-1]
        batch = batch_for_step(k, current)
        batch_type = type(batch)

        def task_loss(p: Params, tensors: dict[str, Tensor], _type: Any = batch_type) -> Tensor:
            return loss_fn(policy, p, _type.from_tensors(tensors))

        grads = task_gradients(
            task_loss, current, batch, create_graph=second_order, losses_out=losses_out
        )
        alpha = config.step_size(k)
        rates = {n: inner_lrs[n] if inner_lrs and n in inner_lrs else alpha for n in current}
        # Meta-SGD rates [*shape] broadcast against the per-task gradients [T, *shape]
        steps.append({n: v - rates[n] * grads[n] for n, v in current.items()})
    return steps


def replay_inner_loop(
    policy: nn.Module,
    theta: Params,
    inner_batches: list[Any],
    *,
    num_tasks: int,
    config: AdaptationConfig,
    second_order: bool,
    inner_lrs: Params | None = None,
    loss: TaskLoss | None = None,
) -> list[Params]:
    """``inner_loop`` from theta (no task axis) on stored batches, one step per batch (step
    k on ``inner_batches[k]``): how TRPO's line search, ProMP's outer steps and the per-task
    units re-adapt after theta moved, on the data the iteration already sampled."""
    return inner_loop(
        policy,
        expand_to_tasks(theta, num_tasks),
        lambda k, current: inner_batches[k],
        config=config,
        second_order=second_order,
        inner_lrs=inner_lrs,
        loss=loss,
        num_steps=len(inner_batches),
    )
