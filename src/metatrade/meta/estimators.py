"""Where an adaptation's batches come from, and which per-task loss reads them: the one
estimator seam (``make_source``).

Two gradient estimators behind one small interface (``BatchSource``), selected by
``AdaptationConfig.estimator``:

* ``sampled`` (any environment): roll out episodes with the current (adapted) policies and
  differentiate a policy-gradient surrogate (vpg / dice / lvc inside, the likelihood-ratio
  surrogate outside). General, but noisy.
* ``exact``: a task family that can compute its expected return exactly (trading: the
  position recursion of ``metatrade.exact``) offers ``objective_batches``,
  ``recent_objective_batch`` and ``objective_loss`` (``ObjectiveFamily``); the inner and
  outer losses are that objective on an adaptation batch and on an evaluation batch that
  lies after it in time. Zero Monte Carlo variance, and the second-order meta-gradient
  through the inner step is exact.

``make_source`` builds either for meta-training (Algorithm 3, lines 5 and 8) or for
test-time adaptation (``test_time=True``: fresh episodes at every step, or the windows that
end at the adaptation data's last bar); ``meta.adapt.adapt`` runs the inner loop on it. The
MAML core sees only a per-task loss of parameters on a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from metatrade.meta.advantages import compute_advantages
from metatrade.meta.config import AdaptationConfig, MetaConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.inner import TaskLoss
from metatrade.meta.protocols import BatchEnv, TaskFamily
from metatrade.meta.sampler import sample_batch
from metatrade.meta.surrogates import ratio_loss
from metatrade.seeding import derive_seed

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

    def recent_objective_batch(
        self, tasks: Sequence[Any], *, num_windows: int, dtype: torch.dtype
    ) -> Any:
        """The batch test-time adaptation adapts on: per task, the windows that end at the
        last bar of the family's data (the most recent past)."""
        ...

    def objective_loss(self, policy: nn.Module, params: Params, batch: Any) -> Tensor:
        """Minus the expected return of one task's batch: a scalar, twice differentiable."""
        ...


class BatchSource(Protocol):
    """One adaptation's batches (Algorithm 3, lines 5 and 8) and the losses on them."""

    inner_loss: TaskLoss | None
    """the inner loop's per-task loss (None: ``config.surrogate``)"""
    outer_loss: TaskLoss
    """the meta-loss's per-task loss on the post-update batch"""
    batches: list[Any]
    """the inner batches served so far, in step order"""

    def inner_batch(self, k: int, params: Params) -> Any:
        """The batch of inner step k + 1, given the parameters after k steps [T, ...]."""
        ...

    def post_batch(self, params: Params) -> Any:
        """The post-update batch, given the adapted parameters [T, ...]."""
        ...

    def task_returns(self, batch: Any, params: Params) -> Tensor:
        """[T]: each task's mean return of ``params`` on ``batch``."""
        ...

    def mean_return(self, batch: Any, params: Params, *, mean_loss: float | None) -> float:
        """The mean over tasks of ``task_returns`` (for the log). ``mean_loss``: the mean
        loss of ``params`` on ``batch`` when already computed (a source whose loss is minus
        its return reads the return off it)."""
        ...


def make_source(
    policy: nn.Module,
    family: TaskFamily,
    tasks: Sequence[Any],
    *,
    config: AdaptationConfig,
    generator: torch.Generator | None = None,
    rng: np.random.Generator | None = None,
    test_time: bool = False,
    reset_seed: int | None = None,
) -> BatchSource:
    """The batches of ``tasks`` that ``config.estimator`` adapts on: the one place that
    builds them (``config.exact_objective`` decides).

    Meta-training (``config`` a ``MetaConfig``): sampled episodes (``generator``: actions and
    env resets; ``num_evaluation_episodes`` post-update episodes), or random adaptation /
    evaluation window pairs (``rng``). Test time: fresh episodes at every step (step k's batch
    resets the envs with ``derive_seed(reset_seed, "adaptation batch", k)``; None: drawn
    from ``generator``), or the
    ``episodes_per_task`` windows that end at the family's last bar, for every step.
    """
    tasks = list(tasks)
    if config.exact_objective:
        objective = _objective_family(family)
        if test_time:
            dtype = next(iter(policy.parameters())).dtype
            recent = objective.recent_objective_batch(
                tasks, num_windows=config.episodes_per_task, dtype=dtype
            )
            return ExactSource(policy, recent, recent, loss=objective.objective_loss)
        if not isinstance(config, MetaConfig) or rng is None:
            raise TypeError("make_source: meta-training windows need a MetaConfig and an rng")
        pair = objective.objective_batches(
            tasks,
            num_windows=config.episodes_per_task,
            num_eval_windows=config.num_evaluation_episodes,
            rng=rng,
        )
        return ExactSource(policy, *pair, loss=objective.objective_loss)
    env = family.make_batch_env(tasks, config.episodes_per_task)
    if test_time or not isinstance(config, MetaConfig):
        return SampledSource(policy, env, config=config, generator=generator, reset_seed=reset_seed)
    post = env
    if config.num_evaluation_episodes != config.episodes_per_task:
        post = family.make_batch_env(tasks, config.num_evaluation_episodes)
    return SampledSource(
        policy,
        env,
        config=config,
        generator=generator,
        post_env=post,
        reuse=config.reuse_inner_batch,
    )


def _objective_family(family: TaskFamily) -> ObjectiveFamily:
    if not isinstance(family, ObjectiveFamily):
        raise TypeError(
            f"meta.estimator='exact' needs a task family with an exact objective "
            f"(objective_batches / objective_loss); {type(family).__name__} has none: "
            "use estimator 'sampled'."
        )
    return family


def sample_for_inner_loop(
    policy: nn.Module,
    params: Params,
    batch_env: BatchEnv,
    *,
    config: AdaptationConfig,
    generator: torch.Generator | None,
    seed: int | None = None,
) -> Episodes:
    """One batch of ``batch_env`` sampled with ``params`` [T, ...], sized as ``config`` says
    (episodes or a step budget, horizon), advantages computed as ``config`` says (the
    baseline refitted on this batch)."""
    batch = sample_batch(
        policy,
        params,
        batch_env,
        steps_per_task=config.steps_per_task,
        horizon=config.horizon,
        generator=generator,
        seed=seed,
    )
    return compute_advantages(
        batch,
        config.gamma,
        config.gae_lambda,
        normalize_advantages=config.normalize_advantages,
        baseline_obs_dims=config.baseline_obs_dims,
    )


class SampledSource:
    """Episodes sampled with the current policies; policy-gradient surrogates on them.

    ``env`` serves the inner batches, ``post_env`` (default ``env``) the post-update one;
    ``reuse``: every inner step on the first batch (``reuse_inner_batch``); ``reset_seed``:
    the batch sampled after k steps resets the envs with ``derive_seed(reset_seed,
    "adaptation batch", k)`` (None: the env's own stream)."""

    outer_loss: TaskLoss = staticmethod(ratio_loss)
    inner_loss: TaskLoss | None = None

    def __init__(
        self,
        policy: nn.Module,
        env: BatchEnv,
        *,
        config: AdaptationConfig,
        generator: torch.Generator | None,
        post_env: BatchEnv | None = None,
        reuse: bool = False,
        reset_seed: int | None = None,
    ) -> None:
        self.policy, self.config, self.generator = policy, config, generator
        self.env, self.post_env = env, post_env or env
        self.reuse, self.reset_seed = reuse, reset_seed
        self.batches: list[Any] = []

    def _sample(self, params: Params, env: BatchEnv, k: int) -> Episodes:
        detached = {n: v.detach() for n, v in params.items()}
        seed = (
            None if self.reset_seed is None else derive_seed(self.reset_seed, "adaptation batch", k)
        )
        return sample_for_inner_loop(
            self.policy, detached, env, config=self.config, generator=self.generator, seed=seed
        )

    def inner_batch(self, k: int, params: Params) -> Any:
        reused = self.reuse and bool(self.batches)
        batch = self.batches[0] if reused else self._sample(params, self.env, k)
        self.batches.append(batch)
        return batch

    def post_batch(self, params: Params) -> Any:
        return self._sample(params, self.post_env, len(self.batches))

    def task_returns(self, batch: Any, params: Params) -> Tensor:
        return batch.task_mean_returns()  # sampled with ``params``: its episodes' returns

    def mean_return(self, batch: Any, params: Params, *, mean_loss: float | None) -> float:
        return batch.task_mean_returns().mean().item()  # the surrogate loss is no return


class ExactSource:
    """The family's exact objective on adaptation windows and the evaluation windows after
    them (meta-train for what deployment does: adapt on the recent past, trade what
    follows). The same adaptation batch serves every inner step."""

    def __init__(self, policy: nn.Module, adapt_batch: Any, eval_batch: Any, *, loss: TaskLoss):
        self.policy = policy
        self.inner_loss: TaskLoss | None = loss
        self.outer_loss: TaskLoss = loss
        # windows are built in numpy on the CPU; moved once to the policy's device
        device = next(iter(policy.parameters())).device
        self.adapt_batch = _to_device(adapt_batch, device)
        same = eval_batch is adapt_batch  # test time: the return is measured where it adapts
        self.eval_batch = self.adapt_batch if same else _to_device(eval_batch, device)
        self.batches: list[Any] = []

    def inner_batch(self, k: int, params: Params) -> Any:
        self.batches.append(self.adapt_batch)
        return self.adapt_batch

    def post_batch(self, params: Params) -> Any:
        return self.eval_batch

    def task_returns(self, batch: Any, params: Params) -> Tensor:
        type_ = type(batch)

        def one(p: Params, tensors: dict[str, Tensor]) -> Tensor:
            return self.outer_loss(self.policy, p, type_.from_tensors(tensors))

        with torch.no_grad():
            return -vmap(one)(params, batch.tensors())

    def mean_return(self, batch: Any, params: Params, *, mean_loss: float | None) -> float:
        if mean_loss is not None:  # the objective is minus the expected return: no forward
            return -mean_loss
        return self.task_returns(batch, params).mean().item()


def measured_returns(source: BatchSource, steps: list[Params]) -> list[Tensor]:
    """[T] mean return of every task after k = 0, ..., K inner steps (``steps`` from
    ``adapt`` on ``source``): step k + 1's batch, sampled with the parameters after k steps
    (exact: their objective on it), and for k = K one more batch (``post_batch``)."""
    served = zip(source.batches, steps[:-1], strict=True)
    returns = [source.task_returns(batch, params) for batch, params in served]
    return [*returns, source.task_returns(source.post_batch(steps[-1]), steps[-1])]


def _to_device(batch: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return batch
    return type(batch).from_tensors({k: v.to(device) for k, v in batch.tensors().items()})
