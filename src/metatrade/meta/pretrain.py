"""The fair "pretrained" start for the exact estimator: multi-task training on the same
objective, with the same number of gradient evaluations as MAML.

MAML's meta-iteration evaluates K inner gradients and one outer gradient through them per
task; this baseline spends the same budget on plain gradient steps of the mean objective
over all training tasks (each step on the adaptation and the evaluation windows of a fresh
task batch, so it sees the same data), with Adam at the meta learning rate. It answers the
question MAML has to beat: is "learn to adapt" better than "learn the average task"?
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metatrade.meta.config import MetaConfig
from metatrade.meta.estimators import ObjectiveFamily
from metatrade.meta.inner import expand_to_tasks
from metatrade.meta.objective import per_task_losses

Params = dict[str, Tensor]


def gradient_evaluations_per_iteration(config: MetaConfig) -> int:
    """Gradient evaluations of one MAML meta-iteration per task: K inner + 1 outer."""
    return config.num_inner_steps + 1


def pretrain_on_objective(
    policy: nn.Module,
    family: ObjectiveFamily,
    *,
    config: MetaConfig,
    num_steps: int,
    rng: np.random.Generator,
) -> tuple[Params, list[float]]:
    """``num_steps`` Adam steps (lr ``config.lr``, clip ``config.max_grad_norm``) on the mean
    exact objective of ``config.meta_batch_size`` training tasks per step, over each task's
    adaptation and evaluation windows together (one recursion: the mean of the two halves
    when they have as many windows, as MAML's do by default). Returns the trained
    parameters (detached) and the loss of every step; ``policy`` is unchanged."""
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    optimizer = torch.optim.Adam(params.values(), lr=config.lr)
    losses = []
    for _ in range(num_steps):
        tasks = family.sample_tasks(config.meta_batch_size, task_set="train", rng=rng)
        adapt_windows, eval_windows = family.objective_batches(
            tasks,
            num_windows=config.episodes_per_task,
            num_eval_windows=config.num_evaluation_episodes,
            rng=rng,
        )
        theta = expand_to_tasks(params, len(tasks))
        windows = _joined(adapt_windows, eval_windows)
        loss = per_task_losses(policy, theta, windows, family.objective_loss).mean()
        optimizer.zero_grad()
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params.values(), config.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
    return {k: v.detach() for k, v in params.items()}, losses


def _joined(first: Any, second: Any) -> Any:
    """Two window batches of the same tasks as one, windows of ``first`` then ``second``
    (every field is [T, W, ...]: joined on the window axis)."""
    a, b = first.tensors(), second.tensors()
    return type(first).from_tensors({k: torch.cat([a[k], b[k]], dim=1) for k in a})
