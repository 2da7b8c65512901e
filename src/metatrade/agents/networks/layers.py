"""Building blocks of the policy and value networks: CleanRL's initialisation, the MLP,
the Gaussian log-std head, the critic wrapper, and the action distribution of a space.

Initialisation follows CleanRL (``layer_init``): orthogonal weights with gain sqrt(2) in the
hidden layers, a small gain (0.01) on the policy head so the initial policy is near uniform,
gain 1 on the value head; zero biases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import torch
from torch import Tensor, nn

from metatrade.meta.distributions import ActionDistribution, Categorical, DiagGaussian

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": nn.functional.elu}
HIDDEN_GAIN = math.sqrt(2.0)
POLICY_HEAD_GAIN = 0.01
VALUE_HEAD_GAIN = 1.0


def layer_init(layer: nn.Linear, gain: float) -> nn.Linear:
    """CleanRL's layer_init: orthogonal weight with ``gain``, zero bias."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not supported; use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def distribution_for(action_space: gym.spaces.Space) -> ActionDistribution:
    """Categorical(n) for ``Discrete(n)``, DiagGaussian(d) for a 1-D ``Box(d,)``."""
    if isinstance(action_space, gym.spaces.Discrete):
        return Categorical(int(action_space.n))
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return DiagGaussian(int(action_space.shape[0]))
    raise ValueError(
        f"action_space {action_space} is not supported: use gym.spaces.Discrete(n) or a 1-D "
        "gym.spaces.Box(d,)"
    )


class MLP(nn.Module):
    """Linear layers with an activation between them; ``[..., in] -> [..., out]``."""

    def __init__(
        self,
        in_dim: int,
        hidden_sizes: Sequence[int],
        out_dim: int,
        activation: str = "tanh",
        out_gain: float = 1.0,
    ) -> None:
        super().__init__()
        sizes = [in_dim, *hidden_sizes]
        self.hidden = nn.ModuleList(
            layer_init(nn.Linear(a, b), HIDDEN_GAIN)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out = layer_init(nn.Linear(sizes[-1], out_dim), out_gain)
        self.activation = activation
        self._act = activation_fn(activation)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = self._act(layer(x))
        return self.out(x)


class GaussianHead(nn.Module):
    """Appends a state-independent log-std parameter to a mean: ``[..., d] -> [..., 2d]``."""

    def __init__(self, d: int, init_log_std: float) -> None:
        super().__init__()
        self.log_std = nn.Parameter(torch.full((d,), float(init_log_std)))

    def forward(self, mean: Tensor) -> Tensor:
        return torch.cat([mean, self.log_std.expand_as(mean)], dim=-1)


class ValueNet(nn.Module):
    """State-value critic ``obs [..., obs_dim] -> V [...]`` (MLP or GRU trunk)."""

    def __init__(self, trunk: nn.Module, head: MLP) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, obs: Tensor) -> Tensor:
        return self.head(self.trunk(obs)).squeeze(-1)
