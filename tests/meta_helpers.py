"""Test-local shorthand for the one inner loop on one stored batch."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from metatrade.meta.adapt import StoredBatches, adapt
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.inner import expand_to_tasks
from metatrade.meta.surrogates import Surrogate


def adapt_on(
    policy: nn.Module,
    theta: dict[str, Tensor],
    batch: Episodes,
    *,
    lr: float | Sequence[float] = 0.1,
    num_steps: int = 1,
    surrogate: str | Surrogate = "vpg",
    gamma: float = 0.99,
    inner_lrs: dict[str, Tensor] | None = None,
    second_order: bool = True,
) -> dict[str, Tensor]:
    """theta'_i of every task of ``batch`` after ``num_steps`` steps on it (step size ``lr``,
    or one per step, the last repeating): ``adapt`` from theta on ``StoredBatches([batch])``."""
    sizes = (float(lr),) if isinstance(lr, int | float) else tuple(lr)
    named = surrogate if isinstance(surrogate, str) else "vpg"
    config = AdaptationConfig(inner_step_sizes=sizes, surrogate=named, gamma=gamma)
    loss = None if isinstance(surrogate, str) else surrogate
    steps = adapt(
        policy,
        expand_to_tasks(theta, batch.num_tasks),
        StoredBatches([batch], loss),
        config=config,
        second_order=second_order,
        inner_lrs=inner_lrs,
        num_steps=num_steps,
    )
    return steps[-1]
