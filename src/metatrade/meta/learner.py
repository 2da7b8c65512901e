"""`MetaLearner`: one MAML meta-iteration per ``step()``, over any TaskFamily.

Meta-iteration (Finn et al., 2017, Algorithm 3): sample tasks; roll out pre-update
episodes with theta; adapt every task at once; roll out post-update episodes with each
theta'_i; update theta on the post-update surrogate with gradients through the adaptation
(Adam, TRPO - the paper's choice - or ProMP's clipped objective with a KL penalty).

Example::

    policy = make_policy("mlp", family_env.observation_space, family_env.action_space)
    learner = MetaLearner(policy, Navigation2DFamily(), MetaConfig(optimizer="adam"))
    for _ in range(10):
        stats = learner.step()      # {"meta/loss": ..., "meta/return_post": ..., ...}
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metatrade.meta.adapt import adapt, adapt_online
from metatrade.meta.advantages import compute_advantages
from metatrade.meta.episodes import Episodes, random_episode_subset, select_episodes
from metatrade.meta.objective import clipped_loss, mean_kl, outer_loss
from metatrade.meta.optimizers import all_finite, clip_grad_norm, trpo_step, warn_skip
from metatrade.meta.protocols import TaskFamily
from metatrade.meta.sampler import sample_batch

Params = dict[str, Tensor]

KL_LOG_TASKS = 5
"""tasks behind the logged post-update KL of Adam / ProMP (TRPO logs its exact one)"""


@dataclass
class MetaConfig:
    """MAML hyper-parameters; defaults are the MAML paper's 2D-navigation config."""

    meta_batch_size: int = 20
    """tasks per meta-iteration"""
    episodes_per_task: int = 20
    """pre-update (fast-batch) episodes per task, used by the inner loop"""
    num_evaluation_episodes: int = 20
    """post-update episodes per task behind the meta-loss"""
    num_inner_steps: int = 1
    """inner policy-gradient steps"""
    inner_lr: float = 0.1
    """inner step size alpha"""
    inner_step_sizes: tuple[float, ...] | None = None
    """step size of inner step 1, 2, ... (the last one repeats) when num_inner_steps > 1,
    e.g. (0.5, 0.25), the MAML paper's 2D-navigation test schedule; None: ``inner_lr`` at
    every step"""
    first_order: bool = False
    """drop second-order terms (FOMAML)"""
    surrogate: str = "vpg"
    """inner surrogate: "vpg" (MAML), "dice" (unbiased), "lvc" (ProMP)"""
    reuse_inner_batch: bool = False
    """with num_inner_steps > 1, reuse the first batch instead of resampling per step"""
    multi_step_loss: bool = False
    """with num_inner_steps > 1, the meta-loss is the mean over k = 1..K of the k-step adapted
    policies' surrogate on the episodes they sampled (MAML++'s multi-step loss), not only the
    K-step one; TRPO's trust region stays on the K-step policies (Adam and TRPO only)"""
    learn_inner_lr: bool = False
    """Meta-SGD: learn one inner learning rate per parameter entry"""
    optimizer: str = "trpo"
    """meta-optimizer: "trpo", "adam" or "promp" """
    lr: float = 1e-3
    """Adam / ProMP learning rate"""
    max_grad_norm: float | None = 10.0
    """global gradient-norm clip for Adam / ProMP (None: off)"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 1.0
    """GAE lambda (1.0 in the paper)"""
    normalize_advantages: bool = True
    """normalise advantages per task"""
    baseline_obs_dims: int | None = None
    """fit the linear baseline on the last this-many observation entries (None: all); keeps
    its cubic-cost solve cheap on wide observations (trading: latest bar + account)"""
    num_steps: int | None = None
    """rollout length (default: the env's max_episode_steps)"""
    steps_per_task: int | None = None
    """sample every training batch by steps, as rllab (the MAML paper's code) does: whole
    episodes until each task has this many steps, so tasks whose episodes end early (a goal
    reached) get more of them (``sample_episodes_for_steps``). None: ``episodes_per_task`` /
    ``num_evaluation_episodes`` episodes per task"""
    max_kl: float = 0.01
    """TRPO trust region"""
    cg_iters: int = 10
    """TRPO conjugate-gradient iterations"""
    cg_damping: float = 1e-5
    """TRPO damping added to the Fisher-vector product"""
    ls_backtrack_ratio: float = 0.8
    """TRPO line-search shrink factor"""
    ls_max_steps: int = 15
    """TRPO line-search backtracks"""
    cg_subsample: float = 1.0
    """TRPO: fraction of every task's episodes behind the Fisher-vector products (rllab's
    ``subsample_factor``; all tasks are kept; 1.0: the exact Fisher)"""
    promp_steps: int = 5
    """ProMP outer gradient steps per sampled batch"""
    promp_clip: float = 0.3
    """ProMP likelihood-ratio clip epsilon"""
    promp_kl_coef: float = 5e-4
    """ProMP penalty on KL(pi_theta_old || pi_theta) over pre-update states"""
    seed: int = 0
    """seed of the default task-sampling and action-noise generators"""

    def __post_init__(self) -> None:
        if self.optimizer not in ("trpo", "adam", "promp"):
            raise ValueError(
                f"MetaConfig.optimizer={self.optimizer!r}; use 'trpo', 'adam' or 'promp'."
            )
        if self.surrogate not in ("vpg", "dice", "lvc"):
            raise ValueError(
                f"MetaConfig.surrogate={self.surrogate!r}; use 'vpg', 'dice' or 'lvc'."
            )
        for name in ("meta_batch_size", "episodes_per_task", "num_evaluation_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"MetaConfig.{name}={getattr(self, name)} must be >= 1.")
        if self.steps_per_task is not None and self.steps_per_task < 1:
            raise ValueError(
                f"MetaConfig.steps_per_task={self.steps_per_task}: use a positive step budget "
                "per task, or None to sample a fixed number of episodes."
            )
        if self.multi_step_loss and (self.optimizer == "promp" or self.reuse_inner_batch):
            raise ValueError(
                "MetaConfig.multi_step_loss needs fresh episodes from every adapted policy "
                "(reuse_inner_batch=False) and optimizer 'adam' or 'trpo'."
            )
        if self.inner_step_sizes is not None:
            self.inner_step_sizes = tuple(float(x) for x in self.inner_step_sizes)
            if not self.inner_step_sizes or min(self.inner_step_sizes) < 0:
                raise ValueError(
                    f"MetaConfig.inner_step_sizes={self.inner_step_sizes}: give one non-negative "
                    "step size per inner step (the last repeats), or None for inner_lr."
                )
        if self.baseline_obs_dims is not None and self.baseline_obs_dims < 1:
            raise ValueError(
                f"MetaConfig.baseline_obs_dims={self.baseline_obs_dims}: use a positive count "
                "of trailing observation entries, or None for all."
            )


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
        self.optimizer: torch.optim.Optimizer | None = None
        if cfg.optimizer in ("adam", "promp"):
            self.optimizer = torch.optim.Adam(self._leaves(), lr=cfg.lr)
        self.rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.iteration = 0

    # ------------------------------------------------------------------ helpers
    def _step_sizes(self) -> tuple[float, ...]:
        cfg = self.config
        return cfg.inner_step_sizes if cfg.inner_step_sizes is not None else (cfg.inner_lr,)

    def _leaves(self) -> list[Tensor]:
        leaves = list(self.params.values())
        if self.inner_lrs is not None:
            leaves += list(self.inner_lrs.values())
        return leaves

    def _detached(self, params: Params) -> Params:
        return {k: v.detach() for k, v in params.items()}

    def _sample(
        self, params: Params, env: Any, per_task: bool, generator: torch.Generator
    ) -> Episodes:
        cfg = self.config
        ep = sample_batch(
            self.policy, self._detached(params), env, cfg.steps_per_task, cfg.num_steps,
            generator, per_task,
        )  # fmt: skip
        return compute_advantages(
            ep,
            cfg.gamma,
            cfg.gae_lambda,
            normalize_advantages=cfg.normalize_advantages,
            baseline_obs_dims=cfg.baseline_obs_dims,
        )

    def _adapt(self, params: Params, pre: Episodes, replay: list[Episodes] | None) -> Params:
        """Adapt with the stored inner batches (step k uses replay[k-1] when resampling)."""
        return self._adapt_steps(params, pre, replay or [])[-1]

    def _adapt_steps(self, params: Params, pre: Episodes, replay: list[Episodes]) -> list[Params]:
        """The adapted parameters after each of the K inner steps (step k >= 2 on replay[k-2])."""
        cfg = self.config
        sizes = self._step_sizes()
        if cfg.num_inner_steps == 0:
            return [adapt(self.policy, params, pre, num_steps=0)]
        steps, current, batch = [], params, pre
        for k in range(cfg.num_inner_steps):
            if k > 0 and replay:
                batch = replay[k - 1]
            current = adapt(
                self.policy, current, batch, 1, sizes[min(k, len(sizes) - 1)], cfg.first_order,
                cfg.surrogate, self.inner_lrs, gamma=cfg.gamma, per_task=k > 0,
            )  # fmt: skip
            steps.append(current)
        return steps

    def _meta_loss(self, steps: list[Params], replay: list[Episodes], post: Episodes) -> Tensor:
        """The outer loss of the K-step policies on ``post``, or with ``multi_step_loss`` the
        mean over k of the k-step policies' loss on the batch they sampled."""
        if not (self.config.multi_step_loss and len(steps) > 1):
            return outer_loss(self.policy, steps[-1], post)
        batches = [*replay, post]
        losses = [outer_loss(self.policy, a, b) for a, b in zip(steps, batches, strict=True)]
        return torch.stack(losses).mean()

    # ------------------------------------------------------------------ one meta-iteration
    def step(
        self, rng: np.random.Generator | None = None, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """Sample tasks, pre-update episodes, adapt, post-update episodes, meta-update."""
        cfg = self.config
        rng = rng if rng is not None else self.rng
        generator = generator if generator is not None else self.generator
        t0 = time.perf_counter()
        tasks = self.family.sample_tasks(cfg.meta_batch_size, "train", rng)
        env_pre = self.family.make_batch_env(tasks, cfg.episodes_per_task)
        env_post = (
            env_pre
            if cfg.num_evaluation_episodes == cfg.episodes_per_task
            else self.family.make_batch_env(tasks, cfg.num_evaluation_episodes)
        )
        pre = self._sample(self.params, env_pre, False, generator)
        replay: list[Episodes] = []
        # Adam differentiates this very adaptation and TRPO takes its gradient from it (graph
        # kept); ProMP re-adapts inside its update, so here it runs without an outer graph.
        keep_graph = cfg.optimizer in ("adam", "trpo")
        with torch.set_grad_enabled(keep_graph):
            adapted, per_task, batch = self.params, False, pre
            adapted_steps: list[Params] = []
            sizes = self._step_sizes()
            for k in range(cfg.num_inner_steps):
                if k > 0 and not cfg.reuse_inner_batch:
                    batch = self._sample(adapted, env_pre, True, generator)
                    replay.append(batch)
                size = sizes[min(k, len(sizes) - 1)]
                adapted = adapt(
                    self.policy, adapted, batch, 1, size, cfg.first_order, cfg.surrogate,
                    self.inner_lrs, gamma=cfg.gamma, per_task=per_task,
                )  # fmt: skip
                adapted_steps.append(adapted)
                per_task = True
        post = self._sample(adapted, env_post, True, generator)
        t1 = time.perf_counter()

        if cfg.optimizer == "trpo":
            stats = self._trpo_update(pre, post, replay, adapted_steps, generator)
        elif cfg.optimizer == "adam":
            stats = self._adam_update(pre, post, replay, adapted_steps)
        else:
            stats = self._promp_update(pre, post, replay)
        t2 = time.perf_counter()
        self.iteration += 1
        stats.update(
            {
                "meta/return_pre": pre.task_mean_returns().mean().item(),
                "meta/return_post": post.task_mean_returns().mean().item(),
                "meta/iteration": float(self.iteration),
                "time/sample_s": t1 - t0,
                "time/update_s": t2 - t1,
                "time/iteration_s": t2 - t0,
            }
        )
        return stats

    # ------------------------------------------------------------------ meta-updates
    def _logged_kl(self, pre: Episodes, post: Episodes, replay: list[Episodes]) -> float:
        """Mean KL(post-update policies before || after) an Adam / ProMP update, for the log.

        Re-adapting every task only for this number would cost about a quarter of an Adam
        iteration, so it is estimated on the first ``KL_LOG_TASKS`` tasks (tasks are i.i.d.).
        """
        k = min(post.num_tasks, KL_LOG_TASKS)

        def head(ep: Episodes) -> Episodes:
            return Episodes.from_tensors({n: v[:k] for n, v in ep.tensors().items()})

        with torch.no_grad():
            adapted = self._adapt(self.params, head(pre), [head(r) for r in replay])
            return mean_kl(self.policy, adapted, head(post)).item()

    def _post_dist_params(self, adapted: Params, post: Episodes) -> Tensor:
        return vmap(lambda p, o: functional_call(self.policy, p, (o,)))(adapted, post.obs)

    def _loss_and_kl_weights(self, post: Episodes) -> Tensor:
        """Per-step weights whose sum-product is the mean over tasks of per-task means."""
        w = post.mask
        return w / w.sum(dim=(-2, -1), keepdim=True) / post.num_tasks

    def _trpo_update(
        self,
        pre: Episodes,
        post: Episodes,
        replay: list[Episodes],
        adapted_steps: list[Params] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, float]:
        """``adapted_steps``: the step's differentiable adaptation at the current theta (the
        parameters after each inner step); TRPO's first evaluation (loss and gradient) reuses
        it instead of adapting again. ``generator``: the step's stream, which draws the
        ``cg_subsample`` Fisher subset (so a resumed run draws the same subsets)."""
        adapted = adapted_steps[-1] if adapted_steps else None
        cfg = self.config
        dist = self.policy.distribution
        weights = self._loss_and_kl_weights(post)
        old = post.dist_params.detach()
        adv = post.advantages

        def kl_fn(p_old: Tensor, p_new: Tensor) -> Tensor:
            return weights * dist.kl(p_old, p_new)

        fisher_kl_fn, fisher_evaluate = kl_fn, None
        if cfg.cg_subsample < 1.0:
            # rllab's subsample_factor: F from a random fraction of every task's episodes
            # (pre-update ones for the adaptation's Jacobian, post-update ones for the KL)
            def subset(ep: Episodes) -> Episodes:
                slots = random_episode_subset(ep, cfg.cg_subsample, generator or self.generator)
                return select_episodes(ep, slots)

            fisher_pre, fisher_post = subset(pre), subset(post)
            fisher_replay = [subset(r) for r in replay]
            fisher_weights = self._loss_and_kl_weights(fisher_post)

            def fisher_kl_fn(p_old: Tensor, p_new: Tensor) -> Tensor:
                return fisher_weights * dist.kl(p_old, p_new)

            with torch.no_grad():
                full = adapted if adapted is not None else self._adapt(self.params, pre, replay)
                at_full = {k: v.detach() for k, v in full.items()}

            def fisher_evaluate() -> Tensor:
                sub = self._adapt(self.params, fisher_pre, fisher_replay)
                # the subset's Jacobian d theta'/d theta, taken at the full batch's theta'
                shifted = {k: v + (at_full[k] - v.detach()) for k, v in sub.items()}
                return self._post_dist_params(shifted, fisher_post)

        multi = cfg.multi_step_loss and cfg.num_inner_steps > 1
        at_theta = [adapted_steps] if adapted_steps else []

        def evaluate() -> tuple[Tensor, Tensor, Tensor]:
            steps = at_theta.pop() if at_theta else self._adapt_steps(self.params, pre, replay)
            new = self._post_dist_params(steps[-1], post)
            ratio = torch.exp(dist.log_prob(new, post.actions) - post.log_probs)
            loss = -(weights * ratio * adv).sum()
            if multi:
                pairs = zip(steps[:-1], replay, strict=True)
                earlier = [outer_loss(self.policy, a, b) for a, b in pairs]
                loss = (loss + sum(earlier)) / len(steps)
            return loss, kl_fn(old, new).sum(), new

        res = trpo_step(
            self._leaves(), evaluate, fisher_kl_fn, cfg.max_kl, cfg.cg_iters, cfg.cg_damping,
            cfg.ls_backtrack_ratio, cfg.ls_max_steps, fisher_evaluate,
        )  # fmt: skip
        return {
            "meta/loss": res.loss_before,
            "meta/loss_after": res.loss_after,
            "meta/kl": res.kl_after,
            "meta/grad_norm": res.grad_norm,
            "meta/step_accepted": float(res.accepted),
            "meta/step_fraction": res.step_fraction,
            "meta/skipped": float(res.skipped),
        }

    def _apply_grads(self, loss: Tensor, what: str) -> tuple[float, bool]:
        leaves = self._leaves()
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)
        ]
        if not all_finite(grads) or not bool(torch.isfinite(loss)):
            norm = float("nan") if not all_finite(grads) else float("inf")
            warn_skip(what, norm)
            return norm, True
        norm = clip_grad_norm(grads, self.config.max_grad_norm)
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=False)
        for p, g in zip(leaves, grads, strict=True):
            p.grad = g
        self.optimizer.step()
        return norm, False

    def _adam_update(
        self, pre: Episodes, post: Episodes, replay: list[Episodes], adapted_steps: list[Params]
    ) -> dict[str, float]:
        loss = self._meta_loss(adapted_steps, replay, post)
        norm, skipped = self._apply_grads(loss, "Adam")
        kl = self._logged_kl(pre, post, replay)
        return {
            "meta/loss": loss.item(),
            "meta/kl": kl,
            "meta/grad_norm": norm,
            "meta/skipped": float(skipped),
        }

    def _promp_update(
        self, pre: Episodes, post: Episodes, replay: list[Episodes]
    ) -> dict[str, float]:
        cfg = self.config
        obj = clipped_loss(cfg.promp_clip)
        first_loss, norm, skipped_any = float("nan"), 0.0, False
        for k in range(cfg.promp_steps):
            adapted = adapt(
                self.policy, self.params, pre, cfg.num_inner_steps, self._step_sizes(),
                cfg.first_order, "lvc", self.inner_lrs, _Replay(replay) if replay else None,
                cfg.gamma,
            )  # fmt: skip
            loss = outer_loss(self.policy, adapted, post, obj)
            kl_pre = mean_kl(self.policy, self.params, pre, per_task=False)
            total = loss + cfg.promp_kl_coef * kl_pre
            if k == 0:
                first_loss = loss.item()
            norm, skipped = self._apply_grads(total, "ProMP")
            skipped_any |= skipped
        kl = self._logged_kl(pre, post, replay)
        return {
            "meta/loss": first_loss,
            "meta/kl": kl,
            "meta/grad_norm": norm,
            "meta/skipped": float(skipped_any),
        }

    # ------------------------------------------------------------------ evaluation / state
    def evaluate_adaptation(
        self,
        tasks: list[Any],
        num_steps_list: tuple[int, ...] = (0, 1, 2, 3),
        episodes_per_task: int | None = None,
        generator: torch.Generator | None = None,
        step_sizes: tuple[float, ...] | None = None,
        steps_per_task: int | None = None,
    ) -> dict[int, float]:
        """Average episode return after k inner steps, each step on fresh episodes sampled
        with the current adapted policies, the baseline refitted on them (the paper's test
        protocol, as pytorch-maml-rl's test.py). theta is untouched. The mean over tasks of
        ``evaluate_adaptation_per_task``.

        ``step_sizes``: the inner step size of step 1, 2, ... (the last one repeats); default
        ``config.inner_step_sizes``, else ``config.inner_lr`` for every step. The original MAML code tested 2D navigation with
        0.5 for the first step and 0.25 after it (``maml_examples/test_maml_point.py``).

        ``steps_per_task``: sample each batch by a step budget instead of an episode count
        (``adapt_online``); that code used 4000 steps per goal.
        """
        per_task = self.evaluate_adaptation_per_task(
            tasks, num_steps_list, episodes_per_task, generator, step_sizes, steps_per_task
        )
        return {k: v.mean().item() for k, v in per_task.items()}

    def evaluate_adaptation_per_task(
        self,
        tasks: list[Any],
        num_steps_list: tuple[int, ...] = (0, 1, 2, 3),
        episodes_per_task: int | None = None,
        generator: torch.Generator | None = None,
        step_sizes: tuple[float, ...] | None = None,
        steps_per_task: int | None = None,
    ) -> dict[int, Tensor]:
        """``evaluate_adaptation`` per task: {k: [T] mean episode return of each task}, for a
        standard error or interval across tasks."""
        cfg = self.config
        generator = (
            generator if generator is not None else torch.Generator().manual_seed(cfg.seed + 1)
        )
        env = self.family.make_batch_env(tasks, episodes_per_task or cfg.episodes_per_task)
        result = adapt_online(
            self.policy, self.params, env, max(num_steps_list), cfg.inner_lr,
            surrogate=cfg.surrogate, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
            normalize_advantages=cfg.normalize_advantages,
            baseline_obs_dims=cfg.baseline_obs_dims, inner_lrs=self.inner_lrs,
            step_sizes=step_sizes or cfg.inner_step_sizes, num_rollout_steps=cfg.num_steps,
            steps_per_task=steps_per_task, generator=generator,
        )  # fmt: skip
        return {k: result.task_returns[k] for k in sorted(set(num_steps_list))}

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


class _Replay:
    """resample_fn that returns stored inner batches in order (same data for every re-adapt)."""

    def __init__(self, batches: list[Episodes]) -> None:
        self.batches = batches
        self.k = 0

    def __call__(self, params: Params) -> Episodes:
        batch = self.batches[self.k]
        self.k += 1
        return batch
