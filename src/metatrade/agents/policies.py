"""Policy and value networks as pure functions of their parameters.

Every policy maps a flat observation ``obs [..., obs_dim]`` to the parameters of its action
distribution ``[..., distribution.param_dim]`` (logits, or Gaussian mean and log-std side by
side) and holds that distribution in ``.distribution``. Nothing in a forward pass depends on
module state other than parameters, so the networks run unchanged through
``torch.func.functional_call(policy, params, (obs,))`` and ``torch.func.vmap`` over a leading
task axis of params and obs: the meta-RL core adapts every task of a batch in one call.

Four trunks:

- ``"mlp"`` (default): the MAML paper's / CleanRL's MLP.
- ``"gru"``: a GRU over the trading observation window ``[L*F (row-major [L, F]), A]``;
  the final hidden state is concatenated with the account features before the head.
  The recurrence is written out (not ``nn.GRU``) so that ``vmap`` and double backward work.
- ``"moe"``: a mixture of experts; a gating network weights K expert heads (softmax) and the
  output is the gate-weighted mixture of the experts' logits (or Gaussian means).
  ``gate_weights(obs) -> [..., K]`` exposes the gate.
- ``"linear"``: logits linear in the observation, each input feature's weights scaled by a
  learned gain of their size (``networks.linear``; one exact step from a meta-learned start
  implements every input's plug-in rule; issue 19). ``hidden_sizes`` and ``activation`` are
  not used.

``logits_by_position(params, bars, accounts)`` evaluates a trading policy on every
observation window of a run of bars for each of a few account vectors (the exact expected-P&L
objective of ``metatrade.exact`` needs all three positions at every bar). The MLP computes
its first layer on the feature windows once per bar, as a 1-D convolution over the per-bar
features (no window is copied), and adds each account's contribution; other policies run
the generic path (materialised windows, one forward per account).

This module is the registry (``POLICY_KINDS``, ``make_policy``, ``make_value_net``, the
checkpoint specs); each family lives in ``metatrade.agents.networks`` (``base``, ``mlp``,
``gru``, ``moe``; building blocks and CleanRL's initialisation in ``layers``), and every name
imports from here as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metatrade.agents.networks.base import Policy
from metatrade.agents.networks.config import NetworkConfig
from metatrade.agents.networks.gru import GRUEncoder, GRUPolicy
from metatrade.agents.networks.layers import (
    MLP,
    VALUE_HEAD_GAIN,
    ValueNet,
    activation_fn,
    distribution_for,
)
from metatrade.agents.networks.linear import LinearPolicy
from metatrade.agents.networks.mlp import MLPPolicy
from metatrade.agents.networks.moe import ExpertBank, MoEPolicy

__all__ = [
    "MLP",
    "POLICY_KINDS",
    "ExpertBank",
    "GRUEncoder",
    "GRUPolicy",
    "LinearPolicy",
    "MLPPolicy",
    "MoEPolicy",
    "NetworkConfig",
    "Policy",
    "ValueNet",
    "distribution_for",
    "make_policy",
    "make_value_net",
    "policy_from_spec",
    "space_from_spec",
    "space_to_spec",
]


def _obs_dim(observation_space: gym.spaces.Space) -> int:
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"observation_space {observation_space} is not supported: policies take a flat "
            "gym.spaces.Box(obs_dim,) (trading obs are [window L*F, account A] flattened)"
        )
    return int(observation_space.shape[0])


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw weights under ``torch.manual_seed(seed)`` inside ``fork_rng`` (the global RNG is
    left as it was); no-op for ``seed=None``."""
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def _check_window(
    window_shape: tuple[int, int] | None, account_dim: int, obs_dim: int
) -> tuple[int, int]:
    """``window_shape`` (L, F) once it is given and fits ``obs_dim``; raises otherwise."""
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
    return window_shape


def _mlp(obs_dim: int, action_space: gym.spaces.Space, **kw: Any) -> Policy:
    return MLPPolicy(
        obs_dim, action_space, kw["hidden_sizes"], kw["activation"], kw["init_log_std"]
    )


def _gru(obs_dim: int, action_space: gym.spaces.Space, **kw: Any) -> Policy:
    args = (kw["hidden_sizes"], kw["activation"], kw["init_log_std"])
    return GRUPolicy(action_space, kw["window_shape"], kw["account_dim"], *args)


def _linear(obs_dim: int, action_space: gym.spaces.Space, **kw: Any) -> Policy:
    return LinearPolicy(
        obs_dim,
        action_space,
        kw["window_shape"],
        kw["account_dim"],
        kw["init_log_std"],
        column_groups=kw["feature_groups"],
    )


def _moe(obs_dim: int, action_space: gym.spaces.Space, **kw: Any) -> Policy:
    args = (kw["hidden_sizes"], kw["activation"], kw["init_log_std"])
    return MoEPolicy(obs_dim, action_space, kw["num_experts"], *args)


# The registry: kind -> builder(obs_dim, action_space, **make_policy's network arguments).
_POLICY_BUILDERS: dict[str, Callable[..., Policy]] = {
    "mlp": _mlp,
    "gru": _gru,
    "moe": _moe,
    "linear": _linear,
}
POLICY_KINDS = tuple(_POLICY_BUILDERS)


def _policy_spec(
    kind: str, obs_dim: int, action_space: gym.spaces.Space, net: dict[str, Any]
) -> dict[str, Any]:
    """The JSON-able arguments of ``make_policy`` (``policy.spec``; ``policy_from_spec``)."""
    window_shape = net["window_shape"]
    return {
        "kind": kind,
        "obs_dim": obs_dim,
        "action_space": space_to_spec(action_space),
        "hidden_sizes": list(net["hidden_sizes"]),
        "activation": net["activation"],
        "window_shape": None if window_shape is None else list(window_shape),
        "account_dim": int(net["account_dim"]),
        "num_experts": int(net["num_experts"]),
        "init_log_std": float(net["init_log_std"]),
        "feature_groups": None if net["feature_groups"] is None else list(net["feature_groups"]),
    }


def make_policy(
    network: NetworkConfig,
    observation_space: gym.spaces.Space,
    action_space: gym.spaces.Space,
    *,
    window_shape: tuple[int, int] | None = None,
    account_dim: int = 0,
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
    feature_groups: Sequence[int] | None = None,
) -> Policy:
    """Build a policy network.

    Args:
        network: which network and how wide (``NetworkConfig``: kind "mlp", "gru" (needs
            ``window_shape`` and ``account_dim``), "moe" or "linear" (groups its gains by the
            window's features when given ``window_shape``); hidden_sizes (for "gru": the first
            is the GRU hidden size); activation; num_experts (K for "moe"); init_log_std (the
            initial Gaussian log-std, ignored for discrete actions)). The run config's
            ``policy`` section and ``PPOConfig`` are NetworkConfigs.
        observation_space: ``Box(obs_dim,)`` of one environment.
        action_space: ``Discrete(n)`` (Categorical) or ``Box(d,)`` (DiagGaussian).
        window_shape, account_dim: layout of trading observations, from the env.
        dtype: parameter dtype (float64 for gradient tests).
        seed: if given, weights are drawn under ``torch.manual_seed(seed)`` inside
            ``torch.random.fork_rng`` (the global RNG is left as it was): same seed, same net.
        feature_groups: "linear" only: a group id per feature column of the window (e.g. the
            six columns of a one-hot feature share one gain); None: one group per column.

    Example:
        >>> import gymnasium as gym, torch
        >>> net = NetworkConfig(kind="mlp")
        >>> pi = make_policy(net, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(5))
        >>> pi(torch.zeros(7, 3)).shape
        torch.Size([7, 5])
    """
    kind = network.kind
    if kind not in POLICY_KINDS:
        raise ValueError(f"policy kind={kind!r} is not supported; use one of {POLICY_KINDS}")
    obs_dim = _obs_dim(observation_space)
    hidden_sizes = tuple(int(h) for h in network.hidden_sizes)
    if not hidden_sizes:
        raise ValueError("hidden_sizes must name at least one layer, e.g. (64, 64)")
    activation_fn(network.activation)
    if kind == "gru":
        _check_window(window_shape, account_dim, obs_dim)
    net = {
        "hidden_sizes": hidden_sizes,
        "activation": network.activation,
        "window_shape": window_shape,
        "account_dim": account_dim,
        "num_experts": network.num_experts,
        "init_log_std": network.init_log_std,
        "feature_groups": None if feature_groups is None else tuple(int(g) for g in feature_groups),
    }
    with _seeded(seed):
        policy = _POLICY_BUILDERS[kind](obs_dim, action_space, **net)
    policy.spec = _policy_spec(kind, obs_dim, action_space, net)
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
    with _seeded(seed):
        if kind == "gru":
            window = _check_window(window_shape, account_dim, obs_dim)
            encoder = GRUEncoder(window, account_dim, hidden_sizes[0])
            trunk: nn.Module = encoder
            head = MLP(encoder.out_dim, hidden_sizes[1:], 1, activation, VALUE_HEAD_GAIN)
        else:
            trunk = nn.Identity()
            head = MLP(obs_dim, hidden_sizes, 1, activation, VALUE_HEAD_GAIN)
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
    network = NetworkConfig(
        kind=spec["kind"],
        hidden_sizes=tuple(spec["hidden_sizes"]),
        activation=spec["activation"],
        num_experts=spec["num_experts"],
        init_log_std=spec["init_log_std"],
    )
    return make_policy(
        network,
        obs_space,
        space_from_spec(spec["action_space"]),
        window_shape=None if window is None else tuple(window),
        account_dim=spec["account_dim"],
        dtype=dtype,
        feature_groups=spec.get("feature_groups"),
    )
