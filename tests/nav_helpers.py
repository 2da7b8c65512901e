"""Test-local policies for the 2D-navigation and sampler tests."""

from __future__ import annotations

import torch
from torch import nn

from metatrade.meta.distributions import DiagGaussian


class ConstantPolicy(nn.Module):
    """Gaussian with a learnable constant mean and log-std (contract-conforming, test-local)."""

    def __init__(self, mean: tuple[float, float], log_std: float) -> None:
        super().__init__()
        self.distribution = DiagGaussian(2)
        self.mean = nn.Parameter(torch.tensor(mean))
        self.log_std = nn.Parameter(torch.full((2,), log_std))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        shape = obs.shape[:-1] + (2,)
        return torch.cat([self.mean.expand(shape), self.log_std.expand(shape)], dim=-1)
