"""The inner loop: every task of a meta-batch adapted at once, differentiably.

theta'_i = theta - alpha * grad L_i(theta) (Finn et al., 2017, eq. 1), for all tasks i in
one ``vmap(grad(inner_loss))`` over the task axis. The result is an ordinary function of
the meta-parameters: when they require grad (regular autograd), backpropagating a loss of
theta' reaches theta through the inner gradient (second order), unless ``first_order``
stops it there (FOMAML: d theta'/d theta = I).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.func import grad, vmap

from metatrade.meta.episodes import Episodes
from metatrade.meta.surrogates import Surrogate, get_surrogate

Params = dict[str, Tensor]


def adapt(
    policy: nn.Module,
    params: Params,
    episodes: Episodes,
    num_steps: int = 1,
    lr: float = 0.1,
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
        lr: inner step size alpha (ignored for tensors named in ``inner_lrs``).
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

    current = params
    in_dim: int | None = 0 if per_task else None
    batch = episodes
    for step in range(num_steps):
        if step > 0 and resample_fn is not None:
            batch = resample_fn(current)
        grads = vmap(grad(task_loss), in_dims=(in_dim, 0))(current, batch.tensors())
        updated = {}
        for name, value in current.items():
            g = grads[name].detach() if first_order else grads[name]
            alpha = inner_lrs[name] if inner_lrs is not None and name in inner_lrs else lr
            # a shared tensor [*shape] minus a per-task step [T, *shape] broadcasts to [T, *shape]
            updated[name] = value - alpha * g
        current = updated
        in_dim = 0
    if num_steps == 0 and not per_task:
        num_tasks = episodes.num_tasks
        current = {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}
    return current
