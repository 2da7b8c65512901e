"""metatrade.agents: policy networks and the agents built on them (PPO, mixture of experts, MAML)."""

from metatrade.agents.base import BaseAgent
from metatrade.agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metatrade.agents.policies import (
    POLICY_KINDS,
    GRUPolicy,
    MLPPolicy,
    MoEPolicy,
    Policy,
    ValueNet,
    make_policy,
    make_value_net,
    policy_from_spec,
)
from metatrade.agents.ppo import PPOAgent, PPOConfig, Rollout

__all__ = [
    "BaseAgent",
    "CheckpointError",
    "PPOAgent",
    "PPOConfig",
    "Rollout",
    "load_checkpoint",
    "save_checkpoint",
    "POLICY_KINDS",
    "GRUPolicy",
    "MLPPolicy",
    "MoEPolicy",
    "Policy",
    "ValueNet",
    "make_policy",
    "make_value_net",
    "policy_from_spec",
]
