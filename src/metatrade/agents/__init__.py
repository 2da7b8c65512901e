"""metatrade.agents: policy networks and the agents built on them (PPO, mixture of experts, MAML)."""

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

__all__ = [
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
