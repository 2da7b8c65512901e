"""The meta-learning settings, defined once: the inner loop's and the outer loop's.

``AdaptationConfig`` holds everything the inner loop needs (steps, step sizes, surrogate,
Meta-SGD, resampling, the batch it samples and how advantages are computed); every path
that adapts (meta-training, TRPO / ProMP re-evaluation, test-time adaptation, the meta-test
protocol, the CLI) takes one. ``MetaSettings`` extends it with the outer loop's settings and
``MetaConfig`` with the learner's seed.

Both are frozen pydantic dataclasses: constructing one validates every field (ranges,
choices, cross-field rules) and the run config's ``meta`` section *is* ``MetaSettings`` (plus
``num_meta_iterations``; the run has one seed, ``run.seed``), so each setting is declared,
defaulted and validated here only.
Defaults are the MAML paper's 2D-navigation settings (Finn et al., 2017, sec. 5.3).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

# Unknown keys are errors (a typo must not fall back to a default); lists become tuples.
_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_STRICT)
class AdaptationConfig:
    """The inner loop: theta'_i = theta - alpha_k * grad L_i (Finn et al., 2017, eq. 1)."""

    estimator: Literal["sampled", "exact"] = Field(
        default="sampled",
        description="sampled: policy-gradient surrogates on sampled episodes (any env); exact: "
        "the family's exact expected-return objective (trading's position recursion)",
    )
    num_inner_steps: int = Field(default=1, ge=0, description="inner gradient steps K (0: no step)")
    inner_lr: float = Field(default=0.1, gt=0, description="inner step size alpha of every step")
    inner_step_sizes: tuple[float, ...] | None = Field(
        default=None,
        description="step size of inner step 1, 2, ... (the last repeats), e.g. [0.5, 0.25] "
        "(the paper's 2D-navigation test schedule); null: inner_lr at every step",
    )
    surrogate: Literal["vpg", "dice", "lvc"] = Field(
        default="vpg", description="inner surrogate: vpg (MAML), dice (unbiased), lvc (ProMP)"
    )
    learn_inner_lr: bool = Field(
        default=False,
        description="Meta-SGD (Li et al., 2017): a learned step size per parameter entry",
    )
    reuse_inner_batch: bool = Field(
        default=False, description="with several inner steps, reuse the first batch (no resampling)"
    )
    episodes_per_task: int = Field(
        default=20,
        gt=0,
        description="episodes (exact: adaptation windows) per task of an inner batch",
    )
    steps_per_task: int | None = Field(
        default=None,
        gt=0,
        description="sample batches by steps (rllab): whole episodes until each task has this "
        "many; null: episodes_per_task episodes",
    )
    horizon: int | None = Field(
        default=None,
        gt=0,
        description="rollout length H (steps of an episode); null: the env's episode length. "
        "Formerly num_steps, still read as this",
    )
    gamma: float = Field(default=0.99, ge=0, le=1, description="discount factor")
    gae_lambda: float = Field(default=1.0, ge=0, le=1, description="GAE lambda (1.0 in the paper)")
    normalize_advantages: bool = Field(default=True, description="normalise advantages per task")
    baseline_obs_dims: int | None = Field(
        default=None,
        gt=0,
        description="fit the linear baseline on the last N observation entries (trading: the "
        "latest bar and the account); null: all",
    )

    @model_validator(mode="before")
    @classmethod
    def _horizon_was_num_steps(cls, data: Any) -> Any:
        """``num_steps`` (configs and checkpoints before the rename) is the horizon: in this
        package ``num_steps`` counts inner gradient steps."""
        kwargs = data.kwargs if isinstance(data, ArgsKwargs) else data
        if not isinstance(kwargs, dict) or "num_steps" not in kwargs:
            return data
        if "horizon" in kwargs:
            raise ValueError(
                "num_steps and horizon both given: num_steps is the old name of horizon (the "
                "rollout length); keep horizon only."
            )
        kwargs = {("horizon" if k == "num_steps" else k): v for k, v in kwargs.items()}
        return ArgsKwargs(data.args, kwargs) if isinstance(data, ArgsKwargs) else kwargs

    @model_validator(mode="after")
    def _step_sizes_valid(self) -> AdaptationConfig:
        sizes = self.inner_step_sizes
        if sizes is not None and (not sizes or min(sizes) < 0):
            raise ValueError(
                f"inner_step_sizes={list(sizes)}: give one non-negative step size per inner "
                "step (the last repeats), or null for inner_lr."
            )
        return self

    @property
    def exact_objective(self) -> bool:
        """Adaptation reads the task family's exact objective (its windows) instead of
        sampled episodes: the one reading of ``estimator`` (batches: ``meta.estimators.
        make_source``; the rules and rows that depend on it ask this)."""
        return self.estimator == "exact"

    def step_size(self, k: int) -> float:
        """alpha of inner step k (0-based): ``inner_step_sizes[k]``, the last one repeating."""
        sizes = self.inner_step_sizes or (self.inner_lr,)
        return sizes[min(k, len(sizes) - 1)]


@dataclass(frozen=True, config=_STRICT)
class MetaSettings(AdaptationConfig):
    """MAML for RL: the inner loop plus the outer loop (Finn et al., 2017, Algorithm 3), as a
    run config's ``meta`` section sets it (its seed is the run's: ``run.seed``)."""

    meta_batch_size: int = Field(default=20, gt=0, description="tasks per meta-iteration")
    num_evaluation_episodes: int = Field(
        default=20,
        gt=0,
        description="post-update episodes (exact: windows) per task behind the meta-loss",
    )
    first_order: bool = Field(default=False, description="drop second-order terms (FOMAML)")
    multi_step_loss: bool = Field(
        default=False,
        description="with several inner steps, meta-loss = mean over k of the k-step adapted "
        "policies' loss on the episodes they sampled (MAML++); Adam / TRPO only",
    )
    optimizer: Literal["trpo", "adam", "promp"] = Field(
        default="trpo", description="meta-optimizer"
    )
    lr: float = Field(default=1e-3, gt=0, description="Adam / ProMP learning rate")
    meta_sgd_lr: float | None = Field(
        default=None,
        gt=0,
        description="Adam / ProMP learning rate of the Meta-SGD step sizes (learn_inner_lr); "
        "null: lr. Adam moves a parameter by about lr per iteration, and step sizes of order "
        "inner_lr (e.g. 30) need a rate of order 1 to move at all",
    )
    max_grad_norm: float | None = Field(
        default=10.0, gt=0, description="gradient-norm clip for Adam / ProMP; null: off"
    )
    max_kl: float = Field(default=0.01, gt=0, description="TRPO trust region")
    cg_iters: int = Field(default=10, gt=0, description="TRPO conjugate-gradient iterations")
    cg_damping: float = Field(default=1e-5, ge=0, description="TRPO Fisher damping")
    ls_backtrack_ratio: float = Field(
        default=0.8, gt=0, lt=1, description="TRPO line-search shrink"
    )
    ls_max_steps: int = Field(default=15, gt=0, description="TRPO line-search backtracks")
    cg_subsample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="TRPO: fraction of every task's episodes behind the Fisher-vector products "
        "(rllab's subsample_factor; 1.0: the exact Fisher)",
    )
    promp_steps: int = Field(default=5, gt=0, description="ProMP outer steps per sampled batch")
    promp_clip: float = Field(default=0.3, gt=0, description="ProMP likelihood-ratio clip epsilon")
    promp_kl_coef: float = Field(
        default=5e-4, ge=0, description="ProMP penalty on KL(pi_theta_old || pi_theta), pre-update"
    )

    @model_validator(mode="after")
    def _multi_step_needs_fresh_batches(self) -> MetaSettings:
        if self.multi_step_loss and (self.optimizer == "promp" or self.reuse_inner_batch):
            raise ValueError(
                "multi_step_loss needs fresh episodes from every adapted policy "
                "(reuse_inner_batch false) and optimizer 'adam' or 'trpo'."
            )
        return self

    @model_validator(mode="after")
    def _exact_needs_adam(self) -> MetaSettings:
        if self.exact_objective and self.multi_step_loss:
            raise ValueError("multi_step_loss needs sampled episodes (estimator 'sampled').")
        if self.exact_objective and self.optimizer != "adam":
            raise ValueError(
                f"estimator 'exact' with optimizer {self.optimizer!r}: TRPO and ProMP need the "
                "behaviour policy of sampled episodes; use optimizer 'adam' (the objective has "
                "no sampling noise to guard against)."
            )
        return self


@dataclass(frozen=True, config=_STRICT)
class MetaConfig(MetaSettings):
    """``MetaSettings`` and the seed of the learner's default task-sampling and action
    generators (what ``MetaLearner`` takes; a run sets it from ``run.seed``)."""

    seed: int = Field(
        default=0, description="seed of the default task-sampling and action generators"
    )
