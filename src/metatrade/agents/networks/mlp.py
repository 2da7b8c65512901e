"""``MLPPolicy``: the MAML paper's / CleanRL's MLP policy, with a fused
``logits_by_position`` (the first layer as a 1-D convolution over the per-bar features)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import gymnasium as gym
from torch import Tensor, nn

from metatrade.agents.networks.base import Policy
from metatrade.agents.networks.layers import MLP, POLICY_HEAD_GAIN


class MLPPolicy(Policy):
    """MLP trunk and linear head (the MAML paper's policy: hidden [64, 64], tanh)."""

    def fused_layers(self) -> tuple[list[str], str, str | None]:
        """What meta/sampler.py's fused forward (the same maths as ``forward`` as a chain of
        batched matmuls) needs: the linear layers' parameter prefixes in order, the hidden
        activation, and the Gaussian log-std's name (None for discrete actions). Read from
        this exact class only (a subclass may override ``forward``)."""
        layers = [f"net.hidden.{i}" for i in range(len(self.net.hidden))] + ["net.out"]
        log_std = "gaussian.log_std" if self.gaussian is not None else None
        return layers, self.net.activation, log_std

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        out_dim = self._init_output(action_space, init_log_std)
        self.net = MLP(obs_dim, hidden_sizes, out_dim, activation, POLICY_HEAD_GAIN)

    def forward(self, obs: Tensor) -> Tensor:
        return self._finish(self.net(obs))

    def logits_by_position(
        self, params: Mapping[str, Tensor], bars: Tensor, accounts: Tensor
    ) -> Tensor:
        """``Policy.logits_by_position`` with the first layer computed once per bar.

        The first layer splits as ``W [x; a] = W_x x + W_a a``: ``W_x`` over the L-bar
        windows is a 1-D convolution of the per-bar features (kernel L, no window copied);
        ``W_a a`` is added per account vector. The layers after it run on [..., P, H].
        """
        if self.gaussian is not None:
            return super().logits_by_position(params, bars, accounts)
        n_feat, n_acc = bars.shape[-1], accounts.shape[-1]
        seq_len = self.window_length(n_feat, n_acc)
        weight, bias = params["net.hidden.0.weight"], params["net.hidden.0.bias"]
        hidden = weight.shape[0]
        kernel = weight[:, : seq_len * n_feat].reshape(hidden, seq_len, n_feat).transpose(1, 2)
        lead = bars.shape[:-2]
        x = bars.reshape(-1, *bars.shape[-2:]).transpose(1, 2)  # [B, F, N]
        pre = nn.functional.conv1d(x, kernel, bias).transpose(1, 2)  # [B, N-L+1, H]
        pre = pre.reshape(*lead, pre.shape[-2], hidden)
        acc = accounts.to(weight.dtype) @ weight[:, seq_len * n_feat :].T  # [P, H]
        act, linear = self.net._act, nn.functional.linear
        h = act(pre.unsqueeze(-2) + acc)  # [..., N-L+1, P, H]
        shape = h.shape[:-1]
        h = h.reshape(-1, hidden)  # 2-D: weight gradients are one matmul, not one per row
        for i in range(1, len(self.net.hidden)):
            h = act(linear(h, params[f"net.hidden.{i}.weight"], params[f"net.hidden.{i}.bias"]))
        out = linear(h, params["net.out.weight"], params["net.out.bias"])
        return out.reshape(*shape, out.shape[-1])
