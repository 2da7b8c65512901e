"""Small synthetic tasks and policies for the walk-forward tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data.features import FEATURE_NAMES
from metatrade.data.synthetic import (
    RegimeParams,
    generate_bars,
    session_timestamps,
    synthetic_instrument,
)
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.walkforward import prepare_task
from metatrade.meta.distributions import Categorical

N_FEATURES = len(FEATURE_NAMES)


def ar_task(phi: float = 0.4, n_bars: int = 1500, seed: int = 0, name: str = "Syn0"):
    """(bars, WalkForwardTask) of one stationary AR(1) regime on 5-minute bars."""
    bars = generate_bars(RegimeParams(phi, 2e-3), n_bars, seed, bar_minutes=5)
    return bars, prepare_task(TaskId(name, "5"), bars, instrument=synthetic_instrument(name))


def regime_switch_bars(
    n_sessions: int, period: int, phi: float = 0.6, seed: int = 0
) -> pd.DataFrame:
    """5-minute bars whose AR(1) coefficient is +phi for ``period`` sessions, then -phi for
    ``period`` sessions, and so on (75 bars a session)."""
    n = 75 * n_sessions
    rng = np.random.default_rng(seed)
    signs = np.where((np.arange(n) // (75 * period)) % 2 == 0, 1.0, -1.0)
    r = np.empty(n)
    prev = 0.0
    eps = rng.standard_normal(n) * 2e-3
    for t in range(n):
        prev = signs[t] * phi * prev + eps[t]
        r[t] = prev
    close = 20_000 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[20_000.0], close[:-1]])
    index = session_timestamps(n, 5)
    index.name = "datetime"
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.0002,
            "low": np.minimum(open_, close) * 0.9998,
            "close": close,
            "volume": 0.0,
        },
        index=index,
    )


def tiny_policy(lookback: int, seed: int = 0) -> nn.Module:
    obs = gym.spaces.Box(-np.inf, np.inf, (lookback * N_FEATURES + 4,))
    return make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)), obs, gym.spaces.Discrete(5), seed=seed
    )


class SignPolicy(nn.Module):
    """Trades the sign of ``theta`` x the last bar's return feature: theta > 0 follows
    momentum, theta < 0 mean reversion. Logits are linear in theta, so one policy-gradient
    step on a regime's episodes moves theta towards that regime's sign."""

    def __init__(self, lookback: int, theta: float = 1.0, scale: float = 2.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([theta]))
        self.signal_index = (lookback - 1) * N_FEATURES + FEATURE_NAMES.index("logret_1")
        self.position_index = lookback * N_FEATURES
        self.scale = scale
        self.distribution = Categorical(5)

    def forward(self, obs: Tensor) -> Tensor:
        z = self.theta * obs[..., self.signal_index] * self.scale
        pos = obs[..., self.position_index]
        off = torch.full_like(z, -5.0)
        zero = torch.zeros_like(z)
        flat = torch.stack([z, -z, off, off, zero], -1)
        long = torch.stack([off, off, -z, off, z], -1)
        short = torch.stack([off, off, off, z, -z], -1)
        p = pos[..., None]
        return torch.where(p > 0.5, long, torch.where(p < -0.5, short, flat))
