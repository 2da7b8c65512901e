"""PPO's settings, defined once (defaults follow CleanRL's ``ppo.py``).

``PPOHyperparameters`` is the update rule's settings; the run config's ``ppo`` section is
that class (plus the run's budget and batch shape), so each field is declared, defaulted and
validated here only. ``PPOConfig`` adds the network and the seed: what ``PPOAgent`` needs.
Both are validated pydantic dataclasses: a bad value or an unknown key raises naming it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from metatrade.agents.networks.config import NetworkConfig

_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_STRICT)
class PPOHyperparameters:
    """PPO's update rule (Schulman et al., 2017; CleanRL's ``ppo.py`` defaults)."""

    learning_rate: float = Field(default=3e-4, gt=0, description="Adam step size")
    n_steps: int = Field(
        default=128, gt=0, description="steps per environment per rollout (batch = n_steps x T x E)"
    )
    gamma: float = Field(default=0.99, ge=0, le=1, description="discount factor")
    gae_lambda: float = Field(default=0.95, ge=0, le=1, description="GAE lambda")
    num_minibatches: int = Field(default=4, gt=0, description="minibatches per epoch")
    update_epochs: int = Field(default=4, gt=0, description="passes over each rollout batch")
    norm_adv: bool = Field(default=True, description="normalise advantages per minibatch")
    clip_coef: float = Field(default=0.2, gt=0, description="surrogate clipping epsilon")
    clip_vloss: bool = Field(default=True, description="clip the value loss (PPO2)")
    ent_coef: float = Field(default=0.01, ge=0, description="entropy bonus coefficient")
    vf_coef: float = Field(default=0.5, ge=0, description="value-loss coefficient")
    max_grad_norm: float = Field(default=0.5, gt=0, description="global gradient-norm clip")
    target_kl: float | None = Field(
        default=None, gt=0, description="early-stop epochs above this KL"
    )
    anneal_lr: bool = Field(default=False, description="linearly decay the learning rate to 0")
    reward_scale: float = Field(
        default=1.0,
        gt=0,
        description="rewards are multiplied by this before GAE (logs stay unscaled)",
    )


@dataclass(frozen=True, config=_STRICT)
class PPOConfig(PPOHyperparameters, NetworkConfig):
    """``PPOAgent``'s config: the hyperparameters, the network (``NetworkConfig``: kind,
    hidden_sizes, activation, num_experts, init_log_std) and the seed."""

    seed: int = Field(
        default=0, description="seeds the networks, sampling, minibatches and env resets"
    )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PPOConfig:
        """Build from a plain dict (a checkpoint's); an unknown key is an error naming it.
        Checkpoints written before the network settings were shared call the kind
        ``policy_kind``."""
        values = dict(values)
        if "policy_kind" in values:
            values["kind"] = values.pop("policy_kind")
        return cls(**values)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}
