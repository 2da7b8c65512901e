"""Where a meta-iteration's batches come from, and which per-task loss reads them.

Two gradient estimators behind one small interface (``BatchSource``), selected by
``AdaptationConfig.estimator``:

* ``sampled`` (any environment): roll out episodes with the current (adapted) policies and
  differentiate a policy-gradient surrogate (vpg / dice / lvc inside, the likelihood-ratio
  surrogate outside). General, but noisy.
* ``exact``: a task family that can compute its expected return exactly (trading: the
  position recursion of ``metatrade.exact``) offers ``objective_batches`` and
  ``objective_loss`` (``ObjectiveFamily``); the inner and outer losses are that objective on
  an adaptation batch and on an evaluation batch that lies after it in time. Zero Monte
  Carlo variance, and the second-order meta-gradient through the inner step is exact.

The MAML core sees only a per-task loss of parameters on a batch; the inner loop, the
outer loop and the meta-update do not care which estimator produced it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from metatrade.meta.adapt import sample_for_inner_loop
from metatrade.meta.config import MetaConfig
from metatrade.meta.inner import TaskLoss
from metatrade.meta.protocols import TaskFamily
from metatrade.meta.surrogates import ratio_loss

Params = dict[str, Tensor]


@runtime_checkable
class ObjectiveFamily(TaskFamily, Protocol):
    """A task family whose expected return has an exact, differentiable form."""

    def objective_batches(
        self,
        tasks: list[Any],
        *,
        num_windows: int,
        num_eval_windows: int,
        rng: np.random.Generator,
    ) -> tuple[Any, Any]:
        """(adaptation, evaluation) batches of ``tasks`` (leading [T] axis); every evaluation
        bar comes after every adaptation bar of its task."""
        ...

    def objective_loss(self, policy: nn.Module, params: Params, batch: Any) -> Tensor:
        """Minus the expected return of one task's batch: a scalar, twice differentiable."""
        ...


class BatchSource(Protocol):
    """One meta-iteration's batches (Algorithm 3, lines 5 and 8) and the losses on them."""

    inner_loss: TaskLoss | None
    """the inner loop's per-task loss (None: ``config.surrogate``)"""
    outer_loss: TaskLoss
    """the meta-loss's per-task loss on the post-update batch"""

    def inner_batch(self, k: int, params: Params) -> Any:
        """The batch of inner step k + 1, given the parameters after k steps [T, ...]."""
        ...

    def post_batch(self, params: Params) -> Any:
        """The post-update batch, given the adapted parameters [T, ...]."""
        ...

    def mean_return(self, batch: Any, params: Params, *, mean_loss: float | None) -> float:
        """The mean over tasks of the return ``params`` get on ``batch`` (for the log).
        ``mean_loss``: the mean loss of ``params`` on ``batch`` when already computed (a
        source whose loss is minus its return reads the return off it)."""
        ...


class SampledSource:
    """Episodes sampled with the current policies; policy-gradient surrogates on them."""

    outer_loss: TaskLoss = staticmethod(ratio_loss)  # type: ignore[assignment]
    inner_loss: TaskLoss | None = None

    def __init__(
        self,
        policy: nn.Module,
        family: TaskFamily,
        tasks: list[Any],
        *,
        config: MetaConfig,
        generator: torch.Generator,
    ) -> None:
        self.policy, self.config, self.generator = policy, config, generator
        self.env_pre = family.make_batch_env(tasks, config.episodes_per_task)
        self.env_post = self.env_pre
        if config.num_evaluation_episodes != config.episodes_per_task:
            self.env_post = family.make_batch_env(tasks, config.num_evaluation_episodes)
        self.first: Any = None

    def _sample(self, params: Params, env: Any) -> Any:
        detached = {k: v.detach() for k, v in params.items()}
        return sample_for_inner_loop(
            self.policy, detached, env, config=self.config, generator=self.generator
        )

    def inner_batch(self, k: int, params: Params) -> Any:
        if self.first is not None and self.config.reuse_inner_batch:
            return self.first
        batch = self._sample(params, self.env_pre)
        self.first = batch if self.first is None else self.first
        return batch

    def post_batch(self, params: Params) -> Any:
        return self._sample(params, self.env_post)

    def mean_return(self, batch: Any, params: Params, *, mean_loss: float | None) -> float:
        return batch.task_mean_returns().mean().item()  # the surrogate loss is no return


class ExactSource:
    """The family's exact objective on adaptation windows and the evaluation windows after
    them (meta-train for what deployment does: adapt on the recent past, trade what
    follows). The same adaptation batch serves every inner step."""

    def __init__(
        self,
        policy: nn.Module,
        family: TaskFamily,
        tasks: list[Any],
        *,
        config: MetaConfig,
        rng: np.random.Generator,
    ) -> None:
        if not isinstance(family, ObjectiveFamily):
            raise TypeError(
                f"meta.estimator='exact' needs a task family with an exact objective "
                f"(objective_batches / objective_loss); {type(family).__name__} has none: "
                "use estimator 'sampled'."
            )
        self.policy = policy
        self.inner_loss = self.outer_loss = family.objective_loss
        batches = family.objective_batches(
            tasks,
            num_windows=config.episodes_per_task,
            num_eval_windows=config.num_evaluation_episodes,
            rng=rng,
        )
        # windows are built in numpy on the CPU; moved once to the policy's device
        device = next(iter(policy.parameters())).device
        self.adapt_batch, self.eval_batch = (_to_device(b, device) for b in batches)

    def inner_batch(self, k: int, params: Params) -> Any:
        return self.adapt_batch

    def post_batch(self, params: Params) -> Any:
        return self.eval_batch

    def mean_return(self, batch: Any, params: Params, *, mean_loss: float | None) -> float:
        if mean_loss is not None:  # the objective is minus the expected return: no forward
            return -mean_loss
        type_ = type(batch)

        def one(p: Params, tensors: dict[str, Tensor]) -> Tensor:
            return self.outer_loss(self.policy, p, type_.from_tensors(tensors))

        with torch.no_grad():
            return -vmap(one)(params, batch.tensors()).mean().item()


def _to_device(batch: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return batch
    return type(batch).from_tensors({k: v.to(device) for k, v in batch.tensors().items()})
