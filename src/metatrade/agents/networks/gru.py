"""``GRUPolicy``: a GRU over the trading observation window ``[L*F (row-major [L, F]), A]``;
the final hidden state is concatenated with the account features before an MLP head. The
recurrence is written out (not ``nn.GRU``) so that ``vmap`` and double backward work."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import torch
from torch import Tensor, nn

from metatrade.agents.networks.base import Policy
from metatrade.agents.networks.layers import MLP, POLICY_HEAD_GAIN


class GRUEncoder(nn.Module):
    """GRU over the observation window, then concat the account features.

    ``obs [..., L*F + A] -> [..., hidden + A]``. Gate equations as in ``torch.nn.GRU``
    (Cho et al., 2014): r, z = sigmoid(...); n = tanh(W_in x + r * (W_hn h)); h' = (1-z) n + z h.
    """

    def __init__(self, window_shape: tuple[int, int], account_dim: int, hidden: int) -> None:
        super().__init__()
        self.window_shape = (int(window_shape[0]), int(window_shape[1]))
        self.account_dim = int(account_dim)
        self.hidden_size = int(hidden)
        n_feat = self.window_shape[1]
        self.x2h = nn.Linear(n_feat, 3 * hidden)
        self.h2h = nn.Linear(hidden, 3 * hidden)
        for layer in (self.x2h, self.h2h):
            for chunk in layer.weight.data.chunk(3, dim=0):
                nn.init.orthogonal_(chunk)
            nn.init.zeros_(layer.bias)

    @property
    def out_dim(self) -> int:
        return self.hidden_size + self.account_dim

    def forward(self, obs: Tensor) -> Tensor:
        seq_len, n_feat = self.window_shape
        window = obs[..., : seq_len * n_feat].reshape(*obs.shape[:-1], seq_len, n_feat)
        account = obs[..., seq_len * n_feat :]
        xs = self.x2h(window)  # [..., L, 3H]: input projections for every step at once
        h = obs.new_zeros(*obs.shape[:-1], self.hidden_size)
        for t in range(seq_len):
            x_r, x_z, x_n = xs[..., t, :].chunk(3, dim=-1)
            h_r, h_z, h_n = self.h2h(h).chunk(3, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h = (1.0 - z) * n + z * h
        return torch.cat([h, account], dim=-1)


class GRUPolicy(Policy):
    """GRU over the window, account features concatenated, then an MLP head."""

    def __init__(
        self,
        action_space: gym.spaces.Space,
        window_shape: tuple[int, int],
        account_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        out_dim = self._init_output(action_space, init_log_std)
        self.encoder = GRUEncoder(window_shape, account_dim, hidden_sizes[0])
        self.head = MLP(
            self.encoder.out_dim, hidden_sizes[1:], out_dim, activation, POLICY_HEAD_GAIN
        )

    def forward(self, obs: Tensor) -> Tensor:
        return self._finish(self.head(self.encoder(obs)))
