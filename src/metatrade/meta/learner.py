"""`MetaLearner`: one MAML meta-iteration per ``step()``, over any TaskFamily.

Meta-iteration (Finn et al., 2017, Algorithm 3): sample tasks; roll out pre-update
episodes with theta (or take the exact objective's windows: ``meta.estimators``); adapt
every task (``meta.adapt.adapt``); roll out post-update episodes with each theta'_i; update
theta with the one meta-update (``meta.updates``: Adam, TRPO - the paper's choice - or
ProMP's clipped objective with a KL penalty) on the per-task contributions the backend
computed: all tasks at once in-process (``meta.contributions``), or per-task units on the
local or Ray executor (``meta.pertask``).

Example::

    policy = make_policy(NetworkConfig(), family_env.observation_space, family_env.action_space)
    learner = MetaLearner(policy, Navigation2DFamily(), MetaConfig(optimizer="adam"))
    for _ in range(10):
        stats = learner.step()      # {"meta/loss": ..., "meta/return_post": ..., ...}
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from metatrade.meta.adapt import adapt_at_test_time
from metatrade.meta.config import AdaptationConfig, MetaConfig
from metatrade.meta.contributions import (
    BatchedContributions,
    adaptation_graph_needed,
    sample_and_adapt,
)
from metatrade.meta.estimators import make_source, measured_returns
from metatrade.meta.protocols import TaskFamily
from metatrade.meta.updates import Contributions, make_update
from metatrade.seeding import derive_seed

if TYPE_CHECKING:
    from metatrade.meta.pertask import PerTaskBackend

Params = dict[str, Tensor]

__all__ = ["AdaptationConfig", "MetaConfig", "MetaLearner"]


class IterationWork(Contributions, Protocol):
    """A meta-iteration's contributions as a backend hands them to the learner: also its
    log entries (returns before / after adaptation, traffic) and what to free after it."""

    def log(self, stats: dict[str, float]) -> dict[str, float]: ...

    def release(self) -> None: ...


class MetaLearner:
    """Holds the meta-parameters theta (and Meta-SGD rates) and runs meta-iterations."""

    def __init__(
        self,
        policy: nn.Module,
        task_family: TaskFamily,
        config: MetaConfig | None = None,
    ) -> None:
        self.policy = policy
        self.family = task_family
        self.config = config or MetaConfig()
        cfg = self.config
        self.params: Params = {
            k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()
        }
        self.inner_lrs: Params | None = None
        if cfg.learn_inner_lr:
            self.inner_lrs = {
                k: torch.full_like(v, cfg.inner_lr).requires_grad_() for k, v in self.params.items()
            }
        self.update = make_update(cfg.optimizer)
        self.optimizer: torch.optim.Optimizer | None = None
        if cfg.optimizer in ("adam", "promp"):
            self.optimizer = torch.optim.Adam(self._param_groups(cfg))
        self.rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.iteration = 0
        self.backend: PerTaskBackend | None = None
        """None: every task in one vmapped computation; else per-task units on an executor
        (``meta.pertask.PerTaskBackend``: local or Ray), the same update, its own rounding"""

    def with_config(self, config: MetaConfig) -> MetaLearner:
        """This learner under new settings: ``self`` if they are its own, else a learner
        rebuilt from ``config`` (so the Adam learning rate, the Meta-SGD rates and everything
        derived from it follow) that keeps theta, the iteration, the random streams and the
        optimizer state that still applies."""
        if config == self.config:
            return self
        new = MetaLearner(self.policy, self.family, config)
        state = self.state_dict()
        if self.config.inner_lr != config.inner_lr:
            state["inner_lrs"] = None  # Meta-SGD rates start again from the new inner_lr
        same_leaves = self.config.learn_inner_lr == config.learn_inner_lr
        if new.optimizer is None or self.optimizer is None or not same_leaves:
            state["optimizer"] = None
        if (self.config.meta_sgd_lr is None) != (config.meta_sgd_lr is None):
            state["optimizer"] = None  # one parameter group or two: a fresh Adam
        new.load_state_dict(state)
        if new.optimizer is not None:
            for group, fresh in zip(
                new.optimizer.param_groups, new._param_groups(config), strict=True
            ):
                group["lr"] = fresh["lr"]
        new.rng, new.generator = self.rng, self.generator
        new.backend = self.backend
        return new

    def _param_groups(self, cfg: MetaConfig) -> list[dict[str, Any]]:
        """Adam's parameter groups: every leaf at ``lr``, or (``meta_sgd_lr`` set) theta at
        ``lr`` and the Meta-SGD step sizes at ``meta_sgd_lr``."""
        if cfg.meta_sgd_lr is None or self.inner_lrs is None:
            return [{"params": self.leaves(), "lr": cfg.lr}]
        return [
            {"params": list(self.params.values()), "lr": cfg.lr},
            {"params": list(self.inner_lrs.values()), "lr": cfg.meta_sgd_lr},
        ]

    def leaves(self) -> list[Tensor]:
        """What the meta-update changes: theta, and the Meta-SGD step sizes if learned."""
        leaves = list(self.params.values())
        if self.inner_lrs is not None:
            leaves += list(self.inner_lrs.values())
        return leaves

    def scale_learning_rates(self, factor: float) -> None:
        """Every optimizer group's rate := its configured rate x ``factor`` (a schedule over
        the run, ``meta.lr_schedule``; stateless, so a resumed run continues it exactly)."""
        if self.optimizer is None:  # TRPO: a trust region, no rate
            return
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    # ------------------------------------------------------------------ one meta-iteration
    def step(
        self, rng: np.random.Generator | None = None, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """One meta-iteration, line by line Algorithm 3 of Finn et al. (2017): the backend
        computes the per-task contributions (lines 4-8 and the task's share of line 10), the
        one meta-update (``self.update``) reduces them and moves theta."""
        cfg = self.config
        rng = rng if rng is not None else self.rng
        t0 = time.perf_counter()
        # line 3: sample a batch of tasks T_i ~ p(T)
        tasks = self.family.sample_tasks(cfg.meta_batch_size, task_set="train", rng=rng)
        if self.backend is not None:  # per-task units; randomness from (seed, iteration, task)
            work: IterationWork = self.backend.begin(self, tasks)
        else:
            work = self._batched(tasks, rng, generator or self.generator)
        t1 = time.perf_counter()
        try:  # line 10: theta <- theta - beta grad_theta sum_i L_i(f_theta'_i) on D'_i
            stats = self.update(self, work)
        finally:
            work.release()
        t2 = time.perf_counter()
        self.iteration += 1
        return (
            stats
            | work.log(stats)
            | {
                "meta/iteration": float(self.iteration),
                "time/sample_s": t1 - t0,
                "time/update_s": t2 - t1,
                "time/iteration_s": t2 - t0,
            }
        )

    def _batched(
        self, tasks: list[Any], rng: np.random.Generator, generator: torch.Generator
    ) -> BatchedContributions:
        """Lines 5-8 for every task at once: the batches (sampled episodes, or the family's
        exact objective), the adaptation, the post-update batch."""
        source = make_source(
            self.policy, self.family, tasks, config=self.config, rng=rng, generator=generator
        )
        losses: list[Tensor] = []
        batch = sample_and_adapt(
            self,
            source,
            num_tasks=len(tasks),
            keep_graph=adaptation_graph_needed(self.update, self),
            generator=generator,
            losses_out=losses,
        )
        fisher = self.update.fisher
        return BatchedContributions(self, batch, fisher=fisher, source=source, inner_losses=losses)

    # ------------------------------------------------------------------ evaluation / state
    def evaluate_adaptation(
        self,
        tasks: list[Any],
        *,
        num_steps_list: tuple[int, ...] = (0, 1, 2, 3),
        adaptation: AdaptationConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[int, float]:
        """Average episode return after k inner steps, each step on fresh episodes sampled
        with the current adapted policies, the baseline refitted on them (the paper's test
        protocol, as pytorch-maml-rl's test.py). theta is untouched. The mean over tasks of
        ``evaluate_adaptation_per_task``.

        ``adaptation``: the test-time inner loop (default: the training one, ``config``),
        e.g. ``dataclasses.replace(config, inner_step_sizes=(0.5, 0.25), steps_per_task=4000)``:
        the original MAML code tested 2D navigation with 0.5 for the first step, 0.25 after
        it, and 4000 steps per goal (``maml_examples/test_maml_point.py``).
        """
        per_task = self.evaluate_adaptation_per_task(
            tasks, num_steps_list=num_steps_list, adaptation=adaptation, generator=generator
        )
        return {k: v.mean().item() for k, v in per_task.items()}

    def evaluate_adaptation_per_task(
        self,
        tasks: list[Any],
        *,
        num_steps_list: tuple[int, ...] = (0, 1, 2, 3),
        adaptation: AdaptationConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[int, Tensor]:
        """``evaluate_adaptation`` per task: {k: [T] mean episode return of each task}, for a
        standard error or interval across tasks."""
        config = adaptation or self.config
        if generator is None:
            generator = torch.Generator().manual_seed(derive_seed(self.config.seed, "evaluation"))
        source = make_source(
            self.policy, self.family, tasks, config=config, generator=generator, test_time=True
        )
        steps = adapt_at_test_time(
            self.policy,
            self.params,
            source,
            config=config,
            num_tasks=len(tasks),
            inner_lrs=self.inner_lrs,
            num_steps=max(num_steps_list),
        )
        with torch.no_grad():
            returns = measured_returns(source, steps)
        return {k: returns[k] for k in sorted(set(num_steps_list))}

    def state_dict(self) -> dict[str, Any]:
        """Meta-parameters, Meta-SGD rates, optimizer state, config and iteration count."""
        return {
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "inner_lrs": None
            if self.inner_lrs is None
            else {k: v.detach().clone() for k, v in self.inner_lrs.items()},
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "config": asdict(self.config),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.params) ^ set(state["params"])
        if missing:
            raise ValueError(
                f"MetaLearner.load_state_dict: parameter names differ: {sorted(missing)}."
            )
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
            if self.inner_lrs is not None and state.get("inner_lrs") is not None:
                for k, v in state["inner_lrs"].items():
                    self.inner_lrs[k].copy_(v)
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state.get("iteration", 0))
