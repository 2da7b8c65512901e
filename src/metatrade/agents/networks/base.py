"""``Policy``: the base of the policy networks (output head, the trading window layout, and
the generic ``logits_by_position`` that the exact objective of ``metatrade.exact`` uses)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor, nn

from metatrade.agents.networks.layers import GaussianHead, distribution_for
from metatrade.meta.distributions import ActionDistribution, DiagGaussian


class Policy(nn.Module):
    """Base of the policies: ``forward(obs [..., obs_dim]) -> dist params [..., param_dim]``.

    ``spec`` holds the JSON-able arguments of ``make_policy`` so checkpoints can rebuild it.
    """

    distribution: ActionDistribution
    spec: dict[str, Any]
    gaussian: GaussianHead | None  # the log-std head of a continuous action space

    def _init_output(self, action_space: gym.spaces.Space, init_log_std: float) -> int:
        self.distribution = distribution_for(action_space)
        if isinstance(self.distribution, DiagGaussian):
            self.gaussian = GaussianHead(self.distribution.d, init_log_std)
            return self.distribution.d
        self.gaussian = None
        return self.distribution.n

    def _finish(self, out: Tensor) -> Tensor:
        return out if self.gaussian is None else self.gaussian(out)

    def window_length(self, num_features: int, account_dim: int) -> int:
        """L such that ``obs_dim == L * num_features + account_dim``; raises if none does."""
        obs_dim = int(self.spec["obs_dim"])
        seq_len, rest = divmod(obs_dim - account_dim, num_features)
        if rest or seq_len < 1:
            raise ValueError(
                f"policy obs_dim={obs_dim} is not L * F + A for F={num_features} features and "
                f"A={account_dim} account values; build the policy for this env's observation"
            )
        return seq_len

    def logits_by_position(
        self, params: Mapping[str, Tensor], bars: Tensor, accounts: Tensor
    ) -> Tensor:
        """Distribution parameters of every window of ``bars`` under each account vector.

        Args:
            params: the policy's parameters (as for ``torch.func.functional_call``).
            bars: per-bar features [..., N, F], oldest first.
            accounts: account parts of the observation [P, A] (e.g. positions [[-1], [0], [1]]).

        Returns:
            [..., N - L + 1, P, param_dim]; row i is the observation ``bars[i : i + L]``
            (flattened row-major, as the envs do) followed by ``accounts[p]``.

        Generic path: materialises the windows and runs P forwards. Works under ``vmap``.
        """
        n_feat, n_acc = bars.shape[-1], accounts.shape[-1]
        seq_len = self.window_length(n_feat, n_acc)
        win = bars.unfold(-2, seq_len, 1).transpose(-1, -2)  # [..., N-L+1, L, F]
        win = win.reshape(*win.shape[:-2], seq_len * n_feat)
        lead = win.shape[:-1]
        obs = torch.cat(
            [
                win.unsqueeze(-2).expand(*lead, accounts.shape[0], win.shape[-1]),
                accounts.to(win.dtype).expand(*lead, *accounts.shape),
            ],
            dim=-1,
        )
        return torch.func.functional_call(self, dict(params), (obs,))
