"""Action distributions as pure functions of a parameter tensor.

Policies output one tensor of distribution parameters (logits, or mean and log-std side by
side); these helpers turn it into log-probabilities, entropies, KLs and samples. Working on
plain tensors instead of ``torch.distributions`` objects keeps everything usable inside
``torch.func.vmap`` and ``grad``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_LOG_2PI = math.log(2.0 * math.pi)


def _draw_device(generator: torch.Generator | None, like: Tensor) -> torch.device:
    """Draw on the generator's device (a CPU generator gives the same numbers whatever
    device the policy runs on), then move to ``like``'s device."""
    return like.device if generator is None else generator.device


def _uniform(shape: torch.Size, generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = _draw_device(generator, like)
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=device)
    return u.to(like.device)


def _normal(shape: torch.Size, generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = _draw_device(generator, like)
    z = torch.randn(shape, generator=generator, dtype=like.dtype, device=device)
    return z.to(like.device)


@dataclass(frozen=True)
class Categorical:
    """Discrete actions 0..n-1; parameters are logits [..., n]; actions are int64 [...]."""

    n: int

    @property
    def param_dim(self) -> int:
        return self.n

    @property
    def action_shape(self) -> tuple[int, ...]:
        return ()

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        logp = torch.log_softmax(params, dim=-1)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, params: Tensor) -> Tensor:
        logp = torch.log_softmax(params, dim=-1)
        return -(logp.exp() * logp).sum(-1)

    def kl(self, params_p: Tensor, params_q: Tensor) -> Tensor:
        """KL(p || q), elementwise over the batch dims."""
        logp = torch.log_softmax(params_p, dim=-1)
        logq = torch.log_softmax(params_q, dim=-1)
        return (logp.exp() * (logp - logq)).sum(-1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # Gumbel-max: one draw per row with an explicit generator (reproducible, batched).
        u = _uniform(params.shape, generator, params)
        gumbel = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))
        return torch.argmax(params.detach() + gumbel, dim=-1)

    def mode(self, params: Tensor) -> Tensor:
        return torch.argmax(params, dim=-1)


@dataclass(frozen=True)
class DiagGaussian:
    """Continuous actions in R^d; parameters are [..., 2d] = (mean, log_std); actions [..., d]."""

    d: int

    @property
    def param_dim(self) -> int:
        return 2 * self.d

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (self.d,)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return params[..., : self.d], params[..., self.d :]

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        mean, log_std = self.split(params)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self, params: Tensor) -> Tensor:
        _, log_std = self.split(params)
        return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)

    def kl(self, params_p: Tensor, params_q: Tensor) -> Tensor:
        """KL(p || q) of diagonal Gaussians, summed over action dims."""
        mp, lsp = self.split(params_p)
        mq, lsq = self.split(params_q)
        var_p, var_q = torch.exp(2 * lsp), torch.exp(2 * lsq)
        return (lsq - lsp + (var_p + (mp - mq).pow(2)) / (2 * var_q) - 0.5).sum(-1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean, log_std = self.split(params.detach())
        noise = _normal(mean.shape, generator, mean)
        return mean + torch.exp(log_std) * noise

    def mode(self, params: Tensor) -> Tensor:
        return self.split(params)[0]


ActionDistribution = Categorical | DiagGaussian


def distribution_of(policy: nn.Module) -> ActionDistribution:
    """The action distribution ``policy`` carries (``.distribution``, the policy contract of
    ``metatrade.agents.policies``), typed; a module without one is a ``TypeError``."""
    dist = getattr(policy, "distribution", None)
    if not isinstance(dist, Categorical | DiagGaussian):
        raise TypeError(
            f"{type(policy).__name__} has no .distribution (Categorical or DiagGaussian): "
            "build the policy with metatrade.agents.policies.make_policy"
        )
    return dist
