"""PPO's hyperparameters (``PPOAgent``'s config; defaults follow CleanRL's ``ppo.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from metatrade.agents.policies import POLICY_KINDS


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults follow CleanRL's ``ppo.py``)."""

    learning_rate: float = 3e-4  # Adam step size for policy and value net
    n_steps: int = 128  # steps per environment per rollout (batch = n_steps * T * E)
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # GAE lambda
    num_minibatches: int = 4  # minibatches per epoch
    update_epochs: int = 4  # passes over each rollout batch
    norm_adv: bool = True  # normalise advantages per minibatch
    clip_coef: float = 0.2  # surrogate clipping epsilon
    clip_vloss: bool = True  # clip the value loss as in the PPO2 implementation
    ent_coef: float = 0.01  # entropy bonus coefficient
    vf_coef: float = 0.5  # value-loss coefficient
    max_grad_norm: float = 0.5  # global gradient-norm clip
    target_kl: float | None = None  # stop the epochs early when approx KL exceeds it
    anneal_lr: bool = False  # linearly decay the learning rate to 0 over learn()
    reward_scale: float = 1.0  # rewards are multiplied by this before GAE (logs stay unscaled)
    policy_kind: str = "mlp"  # "mlp", "gru" or "moe" (metatrade.agents.policies)
    hidden_sizes: tuple[int, ...] = (64, 64)  # hidden layers of policy and value net
    activation: str = "tanh"  # "tanh", "relu" or "elu"
    num_experts: int = 4  # experts of the "moe" policy
    init_log_std: float = 0.0  # initial Gaussian log-std (continuous actions)
    seed: int = 0  # seeds the networks, action sampling, minibatches and env resets

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        checks = {
            "learning_rate": self.learning_rate > 0,
            "n_steps": self.n_steps >= 1,
            "gamma": 0.0 <= self.gamma <= 1.0,
            "gae_lambda": 0.0 <= self.gae_lambda <= 1.0,
            "num_minibatches": self.num_minibatches >= 1,
            "update_epochs": self.update_epochs >= 1,
            "clip_coef": self.clip_coef > 0,
            "reward_scale": self.reward_scale > 0,
            "max_grad_norm": self.max_grad_norm > 0,
            "policy_kind": self.policy_kind in POLICY_KINDS,
            "hidden_sizes": len(self.hidden_sizes) >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"PPOConfig: invalid {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)} "
                "(see the field comments in metatrade/agents/ppo_config.py for valid ranges)"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PPOConfig:
        """Build from a plain dict; an unknown key is an error naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"PPOConfig: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**values)
