"""What one inner step reads and computes: the per-task loss, its batch, every task's gradient.

theta'_i = theta - alpha * grad L_i(theta) (Finn et al., 2017, eq. 1; Algorithm 3, line 7),
for all tasks i at once. Parameters carry a task axis [T, ...] throughout: the
meta-parameters enter as a broadcast view (``expand_to_tasks``, learn2learn's ``clone``), the
T losses are computed in one ``vmap`` over tasks, and one ``autograd.grad`` of their sum with
respect to the [T, ...] tensors gives every task's gradient in its own slice (tasks are
independent, so no slice sees another task's loss). The loop over steps is
``metatrade.meta.adapt.adapt``.

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
    (the second-order term of the meta-gradient); otherwise they are constants. Under
    ``torch.no_grad()`` there is no graph to extend: a view of theta made there still says
    ``requires_grad`` but leads nowhere, so its gradient would silently be zero.
    ``losses_out``: the T losses (detached) are appended to it (a log for free).
    """
    create_graph = (
        create_graph and torch.is_grad_enabled() and any(v.requires_grad for v in params.values())
    )
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
            losses.sum(), list(inputs.values()), create_graph=create_graph, materialize_grads=True
        )
    return dict(zip(inputs, grads, strict=True))


def gradients(loss: Tensor, leaves: list[Tensor], *, retain_graph: bool = False) -> list[Tensor]:
    """d loss / d leaves, zeros for a leaf the loss does not reach (e.g. a Meta-SGD rate
    of a step whose gradient is constant)."""
    return list(
        torch.autograd.grad(loss, leaves, retain_graph=retain_graph, materialize_grads=True)
    )
