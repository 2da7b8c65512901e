"""The network families behind ``metatrade.agents.policies`` (one module each) and their
shared building blocks; build them with ``policies.make_policy`` / ``make_value_net``."""

from metatrade.agents.networks.base import Policy
from metatrade.agents.networks.gru import GRUEncoder, GRUPolicy
from metatrade.agents.networks.layers import MLP, ValueNet, distribution_for
from metatrade.agents.networks.mlp import MLPPolicy
from metatrade.agents.networks.moe import ExpertBank, MoEPolicy

__all__ = [
    "MLP",
    "ExpertBank",
    "GRUEncoder",
    "GRUPolicy",
    "MLPPolicy",
    "MoEPolicy",
    "Policy",
    "ValueNet",
    "distribution_for",
]
