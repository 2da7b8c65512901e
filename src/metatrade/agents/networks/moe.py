"""``MoEPolicy``: a gating network weights K expert heads (softmax); the output is the
gate-weighted mixture of the experts' logits (or Gaussian means)."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import torch
from torch import Tensor, nn

from metatrade.agents.networks.base import Policy
from metatrade.agents.networks.layers import HIDDEN_GAIN, MLP, POLICY_HEAD_GAIN, activation_fn


class ExpertBank(nn.Module):
    """K independent MLPs evaluated together with batched weights.

    ``[..., in] -> [..., K, out]``. Weights are stacked ``[K, in, out]`` so all experts cost one
    einsum per layer instead of a Python loop over experts (and vmap sees plain tensors).
    """

    def __init__(
        self,
        num_experts: int,
        in_dim: int,
        hidden_sizes: Sequence[int],
        out_dim: int,
        activation: str,
        out_gain: float,
    ) -> None:
        super().__init__()
        sizes = [in_dim, *hidden_sizes, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            gain = out_gain if i == len(sizes) - 2 else HIDDEN_GAIN
            w = torch.empty(num_experts, a, b)
            for k in range(num_experts):
                nn.init.orthogonal_(w[k], gain)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(num_experts, b)))
        self._act = activation_fn(activation)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.einsum("...i,kio->...ko", x, self.weights[0]) + self.biases[0]
        for w, b in zip(list(self.weights)[1:], list(self.biases)[1:], strict=True):
            h = torch.einsum("...ki,kio->...ko", self._act(h), w) + b
        return h


class MoEPolicy(Policy):
    """Mixture of experts: ``out = sum_k softmax(gate(obs))_k * expert_k(obs)``.

    The mixture is over the experts' logits (discrete) or means (Gaussian; the log-std is a
    shared parameter). The gate's last layer starts small, so every expert starts with an
    equal share and specialisation is learned.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.spaces.Space,
        num_experts: int = 4,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts={num_experts}: need at least 1 expert")
        out_dim = self._init_output(action_space, init_log_std)
        self.num_experts = int(num_experts)
        self.gate = MLP(obs_dim, hidden_sizes, num_experts, activation, POLICY_HEAD_GAIN)
        self.experts = ExpertBank(
            num_experts, obs_dim, hidden_sizes, out_dim, activation, POLICY_HEAD_GAIN
        )

    def gate_weights(self, obs: Tensor) -> Tensor:
        """Softmax gate ``[..., K]``: how much each expert contributes at ``obs``."""
        return torch.softmax(self.gate(obs), dim=-1)

    def expert_outputs(self, obs: Tensor) -> Tensor:
        """Each expert's logits (or means) ``[..., K, out]``."""
        return self.experts(obs)

    def forward(self, obs: Tensor) -> Tensor:
        mixed = (self.gate_weights(obs).unsqueeze(-1) * self.expert_outputs(obs)).sum(-2)
        return self._finish(mixed)
