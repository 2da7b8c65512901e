"""The one inner loop, ``adapt``: K steps from a start, each on the batch a source gives.

learn2learn's two verbs over parameter dicts: ``expand_to_tasks`` (``clone``: theta as a
differentiable [T, ...] view) and ``adapt`` (theta'_i = theta - alpha_k grad L_i, Finn et
al., 2017, eq. 1, for every task at once). Meta-training, TRPO's line search, ProMP's outer
steps, the per-task units and every test-time path (the meta-test protocol, the walk-forward,
``metatrade adapt`` / ``backtest`` / ``signal``, ``MAMLAgent.adapt``) call it; they differ
only in the source of step k's batch:

* a ``BatchSource`` (``meta.estimators.make_source``): fresh episodes sampled with the
  current adapted policies, or the exact objective's windows;
* ``StoredBatches``: the batches an iteration already drew (re-adapting after theta moved),
  or one fixed batch for every step.

Test-time adaptation is ``adapt_at_test_time``: ``adapt`` from a detached theta under
``torch.no_grad()`` with ``second_order=False``; ``measured_returns`` reads the return after
each step off the batches the source served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from metatrade.meta.config import AdaptationConfig
from metatrade.meta.inner import TaskLoss, expand_to_tasks, task_gradients
from metatrade.meta.surrogates import get_surrogate

Params = dict[str, Tensor]

__all__ = ["InnerBatches", "StoredBatches", "adapt", "adapt_at_test_time", "expand_to_tasks"]


class InnerBatches(Protocol):
    """Where an inner loop's batches come from, and the loss on them."""

    inner_loss: TaskLoss | None
    """the per-task inner loss (None: ``config.surrogate``)"""

    def inner_batch(self, k: int, params: Params) -> Any:
        """The batch of inner step k + 1, given the parameters after k steps [T, ...]."""
        ...


class StoredBatches:
    """Batches already drawn: step k on ``batches[k]``, the last repeating (one batch: the
    same for every step). ``loss``: the inner loss (None: ``config.surrogate``)."""

    def __init__(self, batches: Sequence[Any], loss: TaskLoss | None = None) -> None:
        if not batches:
            raise ValueError("StoredBatches: give at least one batch")
        self.batches, self.inner_loss = list(batches), loss

    def inner_batch(self, k: int, params: Params) -> Any:
        return self.batches[min(k, len(self.batches) - 1)]


def adapt(
    policy: nn.Module,
    params: Params,
    source: InnerBatches,
    *,
    config: AdaptationConfig,
    second_order: bool,
    inner_lrs: Params | None = None,
    num_steps: int | None = None,
    losses_out: list[Tensor] | None = None,
) -> list[Params]:
    """The parameters after 0, 1, ..., K inner steps: ``[params, theta'_1, ..., theta'_K]``.

    Args:
        policy: the policy module (used only through ``functional_call`` by the loss).
        params: the start, [T, *shape] (theta through ``expand_to_tasks``, or adapted params).
        source: step k's batch is ``source.inner_batch(k, params after k steps)``, its loss
            ``source.inner_loss`` (default ``config.surrogate``; ProMP re-adapts with lvc, the
            exact estimator differentiates its expected P&L).
        config: step sizes (``config.step_size(k)``), surrogate, discount.
        second_order: keep the graph through the inner gradients (MAML) or not (FOMAML, and
            every adaptation nothing differentiates).
        inner_lrs: Meta-SGD per-parameter step sizes (Li et al., 2017), overriding
            ``config.step_size`` for the tensors they name; learnable when they require grad.
        num_steps: the number of inner steps K (default ``config.num_inner_steps``).
        losses_out: step k's per-task losses [T] (detached) are appended to it.

    ``params`` is never modified; every returned tensor is [T, *shape].
    """
    loss_fn = source.inner_loss or get_surrogate(config.surrogate, config.gamma)
    steps = [params]
    for k in range(config.num_inner_steps if num_steps is None else num_steps):
        current = steps[-1]
        batch = source.inner_batch(k, current)
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


def adapt_at_test_time(
    policy: nn.Module,
    theta: Params,
    source: InnerBatches,
    *,
    config: AdaptationConfig,
    num_tasks: int,
    inner_lrs: Params | None = None,
    num_steps: int | None = None,
) -> list[Params]:
    """``adapt`` as every test-time path runs it (the protocol, the walk-forward,
    ``evaluate_adaptation``, ``MAMLAgent.adapt``): from ``theta`` (no task axis) broadcast
    to ``num_tasks`` tasks, first order, without a graph; theta and ``inner_lrs`` are
    detached, so nothing reaches the meta-parameters."""

    def detached(p: Params) -> Params:
        return {k: v.detach() for k, v in p.items()}

    with torch.no_grad():
        return adapt(
            policy,
            expand_to_tasks(detached(theta), num_tasks),
            source,
            config=config,
            second_order=False,
            inner_lrs=None if inner_lrs is None else detached(inner_lrs),
            num_steps=num_steps,
        )
