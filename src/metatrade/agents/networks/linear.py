"""``LinearPolicy``: logits linear in the observation, each input feature's weights scaled by
a learned gain of their own size (issue 19, docs/regimes.md).

Why linear: the gradient of the expected P&L of a policy whose long-minus-short logit is
linear in a feature x, at zero weight, is proportional to sum_t x_t r_{t+1}, the covariance
of x with the next return; so ONE exact inner step from a (meta-learned) start turns the
weights into the plug-in rule of every input at once, each weighted by its estimated
strength, and Meta-SGD's per-weight step sizes (Li et al., 2017) learn how far to trust
each (shrinkage toward the family's prior).

Why the gain: one step is linear in the data, so it cannot *select* among the inputs the
way a desk picks the rule with the best in-sample P&L. A forward pass that is nonlinear in
the adapted weights can: with ``w_f`` the weights on input feature f (its columns at every
bar of the window, every action),

    W_eff[:, cols(f)] = W[:, cols(f)] * (1 + exp(a_f) * mean(W[:, cols(f)]^2)),

(features may share a group: ``column_groups``, e.g. the six columns of a one-hot time of
day), a feature whose post-step weights are large (strong in-sample evidence) counts more than
its linear share and a weak one less: an odd, learned shrinkage function of the estimate,
like the posterior mean under a spike-and-slab prior. ``a_f`` are parameters (meta-learned;
the account part and the bias have one gain each). Measured on the regime family: +0.04 of
the oracle on time-of-day tasks at equal mean (docs/regimes.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import torch
from torch import Tensor, nn

from metatrade.agents.networks.base import Policy

INIT_GAIN = 0.1
"""exp(a_f) at initialisation (chosen on validation tasks: 0.1 over 0.01 and 0.001)"""


def feature_groups(
    obs_dim: int,
    window_shape: tuple[int, int] | None,
    account_dim: int,
    column_groups: Sequence[int] | None = None,
) -> Tensor:
    """Group index of every observation entry, int64 [obs_dim]: entry l*F + f of the [L, F]
    window is in the group of feature column f (``column_groups[f]``, default f: one group
    per column), the account entries form the next group. Without a window: one group per
    entry."""
    if window_shape is None:
        return torch.arange(obs_dim)
    seq_len, n_feat = window_shape
    cols = torch.arange(n_feat) if column_groups is None else torch.as_tensor(column_groups)
    if cols.shape != (n_feat,) or int(cols.min()) < 0:
        raise ValueError(
            f"feature_groups={list(column_groups or [])}: give one group id >= 0 per feature "
            f"column ({n_feat} columns)"
        )
    _, cols = torch.unique(cols, return_inverse=True)  # ids 0 .. G-1
    window = cols.repeat(seq_len)
    return torch.cat([window, torch.full((account_dim,), int(cols.max()) + 1)])


class LinearPolicy(Policy):
    """``logits = W_eff obs + b_eff`` with the per-feature gain above (module docstring)."""

    average: Tensor  # buffers (register_buffer below): [obs_dim, G] and [G, obs_dim]
    member: Tensor

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.spaces.Space,
        window_shape: tuple[int, int] | None = None,
        account_dim: int = 0,
        init_log_std: float = 0.0,
        *,
        column_groups: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        out_dim = self._init_output(action_space, init_log_std)
        self.linear = nn.Linear(obs_dim, out_dim)
        nn.init.zeros_(self.linear.weight)  # the start is meta-learned; 0 = no prior rule
        nn.init.zeros_(self.linear.bias)
        groups = feature_groups(obs_dim, window_shape, account_dim, column_groups)
        num_groups = int(groups.max()) + 1
        # membership [obs_dim, G], each column averaging its group (a matmul: vmap-friendly)
        member = nn.functional.one_hot(groups, num_groups).float()
        self.register_buffer("average", member / member.sum(0), persistent=False)
        self.register_buffer("member", member.T.contiguous(), persistent=False)
        # one gain per feature group, then the bias's
        self.log_gain = nn.Parameter(torch.full((num_groups + 1,), math.log(INIT_GAIN)))

    def effective(self) -> tuple[Tensor, Tensor]:
        """(W_eff [out, obs_dim], b_eff [out]) under the current (possibly swapped-in)
        parameters."""
        w, b, gain = self.linear.weight, self.linear.bias, self.log_gain.exp()
        mean_sq = (w * w).mean(0) @ self.average.to(w.dtype)  # [G]: mean square per group
        scale = 1.0 + gain[:-1] * mean_sq
        b_eff = b * (1.0 + gain[-1] * (b * b).mean())
        return w * (scale @ self.member.to(w.dtype)), b_eff

    def forward(self, obs: Tensor) -> Tensor:
        w, b = self.effective()
        return self._finish(nn.functional.linear(obs, w, b))
