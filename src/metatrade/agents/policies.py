"""Policy and value networks as pure functions of their parameters.

Every policy maps a flat observation ``obs [..., obs_dim]`` to the parameters of its action
distribution ``[..., distribution.param_dim]`` (logits, or Gaussian mean and log-std side by
side) and holds that distribution in ``.distribution``. Nothing in a forward pass depends on
module state other than parameters, so the networks run unchanged through
``torch.func.functional_call(policy, params, (obs,))`` and ``torch.func.vmap`` over a leading
task axis of params and obs: the meta-RL core adapts every task of a batch in one call.

Three trunks:

- ``"mlp"`` (default): the MAML paper's / CleanRL's MLP.
- ``"gru"``: a GRU over the trading observation window ``[L*F (row-major [L, F]), A]``;
  the final hidden state is concatenated with the account features before the head.
  The recurrence is written out (not ``nn.GRU``) so that ``vmap`` and double backward work.
- ``"moe"``: a mixture of experts; a gating network weights K expert heads (softmax) and the
  output is the gate-weighted mixture of the experts' logits (or Gaussian means).
  ``gate_weights(obs) -> [..., K]`` exposes the gate.

``logits_by_position(params, bars, accounts)`` evaluates a trading policy on every
observation window of a run of bars for each of a few account vectors (the exact expected-P&L
objective of ``metatrade.exact`` needs all three positions at every bar). The MLP computes
its first layer on the feature windows once per bar, as a 1-D convolution over the per-bar
features (no window is copied), and adds each account's contribution; other policies run
the generic path (materialised windows, one forward per account).

Initialisation follows CleanRL (``layer_init``): orthogonal weights with gain sqrt(2) in the
hidden layers, a small gain (0.01) on the policy head so the initial policy is near uniform,
gain 1 on the value head; zero biases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from metatrade.meta.distributions import ActionDistribution, Categorical, DiagGaussian

POLICY_KINDS = ("mlp", "gru", "moe")
_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "elu": nn.functional.elu}
_HIDDEN_GAIN = math.sqrt(2.0)
_POLICY_HEAD_GAIN = 0.01
_VALUE_HEAD_GAIN = 1.0


def _layer_init(layer: nn.Linear, gain: float) -> nn.Linear:
    """CleanRL's layer_init: orthogonal weight with ``gain``, zero bias."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


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


def _obs_dim(observation_space: gym.spaces.Space) -> int:
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"observation_space {observation_space} is not supported: policies take a flat "
            "gym.spaces.Box(obs_dim,) (trading obs are [window L*F, account A] flattened)"
        )
    return int(observation_space.shape[0])


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
            _layer_init(nn.Linear(a, b), _HIDDEN_GAIN)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.out = _layer_init(nn.Linear(sizes[-1], out_dim), out_gain)
        self.activation = activation
        self._act = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = self._act(layer(x))
        return self.out(x)


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


class _GaussianHead(nn.Module):
    """Appends a state-independent log-std parameter to a mean: ``[..., d] -> [..., 2d]``."""

    def __init__(self, d: int, init_log_std: float) -> None:
        super().__init__()
        self.log_std = nn.Parameter(torch.full((d,), float(init_log_std)))

    def forward(self, mean: Tensor) -> Tensor:
        return torch.cat([mean, self.log_std.expand_as(mean)], dim=-1)


class Policy(nn.Module):
    """Base of the policies: ``forward(obs [..., obs_dim]) -> dist params [..., param_dim]``.

    ``spec`` holds the JSON-able arguments of ``make_policy`` so checkpoints can rebuild it.
    """

    distribution: ActionDistribution
    spec: dict[str, Any]

    def _init_output(self, action_space: gym.spaces.Space, init_log_std: float) -> int:
        self.distribution = distribution_for(action_space)
        if isinstance(self.distribution, DiagGaussian):
            self.gaussian = _GaussianHead(self.distribution.d, init_log_std)
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
        self.net = MLP(obs_dim, hidden_sizes, out_dim, activation, _POLICY_HEAD_GAIN)

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
            self.encoder.out_dim, hidden_sizes[1:], out_dim, activation, _POLICY_HEAD_GAIN
        )

    def forward(self, obs: Tensor) -> Tensor:
        return self._finish(self.head(self.encoder(obs)))


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
            gain = out_gain if i == len(sizes) - 2 else _HIDDEN_GAIN
            w = torch.empty(num_experts, a, b)
            for k in range(num_experts):
                nn.init.orthogonal_(w[k], gain)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(num_experts, b)))
        self._act = _activation(activation)

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
        self.gate = MLP(obs_dim, hidden_sizes, num_experts, activation, _POLICY_HEAD_GAIN)
        self.experts = ExpertBank(
            num_experts, obs_dim, hidden_sizes, out_dim, activation, _POLICY_HEAD_GAIN
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


class ValueNet(nn.Module):
    """State-value critic ``obs [..., obs_dim] -> V [...]`` (MLP or GRU trunk)."""

    def __init__(self, trunk: nn.Module, head: MLP) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, obs: Tensor) -> Tensor:
        return self.head(self.trunk(obs)).squeeze(-1)


def _check_window(window_shape: tuple[int, int] | None, account_dim: int, obs_dim: int) -> None:
    if window_shape is None:
        raise ValueError(
            "kind='gru' needs window_shape=(L, F) (and account_dim=A): pass env.window_shape "
            "and env.account_dim"
        )
    seq_len, n_feat = window_shape
    if seq_len * n_feat + account_dim != obs_dim:
        raise ValueError(
            f"window_shape={tuple(window_shape)} and account_dim={account_dim} give "
            f"{seq_len}*{n_feat}+{account_dim}={seq_len * n_feat + account_dim} values but the "
            f"observation has obs_dim={obs_dim}; pass env.window_shape and env.account_dim"
        )


def make_policy(
    kind: str,
    observation_space: gym.spaces.Space,
    action_space: gym.spaces.Space,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    window_shape: tuple[int, int] | None = None,
    account_dim: int = 0,
    num_experts: int = 4,
    init_log_std: float = 0.0,
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
) -> Policy:
    """Build a policy network.

    Args:
        kind: "mlp" (default trunk), "gru" (needs ``window_shape`` and ``account_dim``) or "moe".
        observation_space: ``Box(obs_dim,)`` of one environment.
        action_space: ``Discrete(n)`` (Categorical) or ``Box(d,)`` (DiagGaussian).
        hidden_sizes: hidden layer widths (for "gru": the first is the GRU hidden size).
        activation: "tanh", "relu" or "elu".
        window_shape, account_dim: layout of trading observations, from the env.
        num_experts: K for "moe".
        init_log_std: initial Gaussian log-std (ignored for discrete actions).
        dtype: parameter dtype (float64 for gradient tests).
        seed: if given, weights are drawn under ``torch.manual_seed(seed)`` inside
            ``torch.random.fork_rng`` (the global RNG is left as it was): same seed, same net.

    Example:
        >>> import gymnasium as gym, torch
        >>> pi = make_policy("mlp", gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(5))
        >>> pi(torch.zeros(7, 3)).shape
        torch.Size([7, 5])
    """
    if kind not in POLICY_KINDS:
        raise ValueError(f"policy kind={kind!r} is not supported; use one of {POLICY_KINDS}")
    obs_dim = _obs_dim(observation_space)
    hidden_sizes = tuple(int(h) for h in hidden_sizes)
    if not hidden_sizes:
        raise ValueError("hidden_sizes must name at least one layer, e.g. (64, 64)")
    _activation(activation)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if kind == "mlp":
            policy: Policy = MLPPolicy(
                obs_dim, action_space, hidden_sizes, activation, init_log_std
            )
        elif kind == "gru":
            _check_window(window_shape, account_dim, obs_dim)
            policy = GRUPolicy(
                action_space, window_shape, account_dim, hidden_sizes, activation, init_log_std
            )
        else:
            policy = MoEPolicy(
                obs_dim, action_space, num_experts, hidden_sizes, activation, init_log_std
            )
    policy.spec = {
        "kind": kind,
        "obs_dim": obs_dim,
        "action_space": space_to_spec(action_space),
        "hidden_sizes": list(hidden_sizes),
        "activation": activation,
        "window_shape": None if window_shape is None else list(window_shape),
        "account_dim": int(account_dim),
        "num_experts": int(num_experts),
        "init_log_std": float(init_log_std),
    }
    return policy.to(dtype)


def make_value_net(
    observation_space: gym.spaces.Space,
    hidden_sizes: Sequence[int] = (64, 64),
    kind: str = "mlp",
    activation: str = "tanh",
    window_shape: tuple[int, int] | None = None,
    account_dim: int = 0,
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
) -> ValueNet:
    """Build a critic ``obs [..., obs_dim] -> V [...]``; kind "gru" uses a GRU trunk, "mlp" and
    "moe" an MLP (a mixture gains nothing for a baseline)."""
    if kind not in POLICY_KINDS:
        raise ValueError(f"value net kind={kind!r} is not supported; use one of {POLICY_KINDS}")
    obs_dim = _obs_dim(observation_space)
    hidden_sizes = tuple(int(h) for h in hidden_sizes)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if kind == "gru":
            _check_window(window_shape, account_dim, obs_dim)
            trunk: nn.Module = GRUEncoder(window_shape, account_dim, hidden_sizes[0])
            head = MLP(trunk.out_dim, hidden_sizes[1:], 1, activation, _VALUE_HEAD_GAIN)
        else:
            trunk = nn.Identity()
            head = MLP(obs_dim, hidden_sizes, 1, activation, _VALUE_HEAD_GAIN)
    return ValueNet(trunk, head).to(dtype)


def space_to_spec(space: gym.spaces.Space) -> dict[str, Any]:
    """A JSON-able description of a Discrete or Box space (for checkpoint configs)."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "low": space.low.reshape(-1).tolist(),
            "high": space.high.reshape(-1).tolist(),
        }
    raise ValueError(f"space {space} is not supported: use Discrete(n) or Box")


def space_from_spec(spec: dict[str, Any]) -> gym.spaces.Space:
    """Inverse of ``space_to_spec``."""
    if spec["type"] == "Discrete":
        return gym.spaces.Discrete(int(spec["n"]))
    shape = tuple(spec["shape"])
    low = np.asarray(spec["low"], dtype=np.float32).reshape(shape)
    high = np.asarray(spec["high"], dtype=np.float32).reshape(shape)
    return gym.spaces.Box(low, high, shape, dtype=np.float32)


def policy_from_spec(spec: dict[str, Any], dtype: torch.dtype = torch.float32) -> Policy:
    """Rebuild a policy (fresh weights) from ``policy.spec``."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (int(spec["obs_dim"]),), dtype=np.float32)
    window = spec.get("window_shape")
    return make_policy(
        spec["kind"],
        obs_space,
        space_from_spec(spec["action_space"]),
        hidden_sizes=spec["hidden_sizes"],
        activation=spec["activation"],
        window_shape=None if window is None else tuple(window),
        account_dim=spec["account_dim"],
        num_experts=spec["num_experts"],
        init_log_std=spec["init_log_std"],
        dtype=dtype,
    )
