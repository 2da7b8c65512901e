"""Issue #11 item 9: Gymnasium as users try it first.

Reproduction: ``python -c "import gymnasium as gym, metatrade; gym.make('metatrade/Trading-v0')"``
failed (the id was registered only by ``import metatrade.market``, and ``TradingEnv`` needed
``task_arrays``).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metatrade


def test_import_metatrade_registers_the_env_and_make_needs_no_arguments() -> None:
    code = (
        "import gymnasium as gym, metatrade; env = gym.make('metatrade/Trading-v0'); "
        "obs, _ = env.reset(seed=0); print(obs.shape[0], env.unwrapped.task_arrays.task)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(32 * 22 + 4), "Nifty:15"]  # the documented default


def test_check_env_passes_on_the_default_env() -> None:
    env = gym.make(metatrade.ENV_ID)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    # the only remarks: the observation Box is unbounded (features are z-scores, account
    # values are not bounded); anything else is a failure of the Gymnasium contract
    assert all("infinity" in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_stable_baselines3_ppo_trains_on_it() -> None:
    """The library most RL users already have runs a few thousand steps on the env."""
    sb3 = pytest.importorskip("stable_baselines3")
    import torch

    torch.set_num_threads(1)
    env = gym.make(metatrade.ENV_ID, lookback=8, episode_length=128)
    model = sb3.PPO(
        "MlpPolicy",
        env,
        n_steps=512,
        batch_size=128,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [32]},
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=2048)
    assert model.num_timesteps == 2048
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True)
    )
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(np.asarray(action)))
