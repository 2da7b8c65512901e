"""metatrade.agents: policy networks and the agents built on them (PPO, mixture of experts, MAML)."""

from metatrade.agents.base import BaseAgent
from metatrade.agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metatrade.agents.maml_agent import MAMLAgent
from metatrade.agents.moe_agent import MoEAgent, flat_observations, regime_labels, regime_report
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
    "MAMLAgent",
    "MoEAgent",
    "PPOAgent",
    "PPOConfig",
    "Rollout",
    "flat_observations",
    "load_checkpoint",
    "regime_labels",
    "regime_report",
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
