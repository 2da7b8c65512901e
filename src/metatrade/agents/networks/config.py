"""The policy network's settings, defined once: the run config's ``policy`` section and the
network part of ``PPOConfig`` are this class (``metatrade.agents.policies.make_policy``
builds from it)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

PolicyKind = Literal["mlp", "gru", "moe", "linear"]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class NetworkConfig:
    """Which network and how wide (the observation and action spaces come from the env)."""

    kind: PolicyKind = Field(
        default="mlp",
        description="network trunk (linear: logits linear in the observation with a learned "
        "gain per input feature; hidden_sizes and activation unused)",
    )
    hidden_sizes: tuple[int, ...] = Field(
        default=(64, 64), min_length=1, description="hidden layer widths"
    )
    activation: Literal["tanh", "relu", "elu"] = Field(
        default="tanh", description="hidden activation"
    )
    num_experts: int = Field(default=4, gt=0, description="moe only: number of experts")
    init_log_std: float = Field(default=0.0, description="continuous actions only: initial log-std")

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(h <= 0 for h in v):
            raise ValueError(f"expected positive layer widths, got {list(v)}")
        return v
