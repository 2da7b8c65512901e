"""TradingEnv: Gymnasium compliance, fill convention, observation layout, episode ends."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metatrade.market  # noqa: F401  (registers metatrade/Trading-v0)
from market_helpers import make_task_arrays
from metatrade.market import Action, CostModel, RewardShaping, TradingEnv, TradingEnvConfig


def test_check_env_passes() -> None:
    env = TradingEnv(make_task_arrays(), episode_length=64, lookback=8)
    with pytest.warns(UserWarning):  # gymnasium warns about the unbounded Box only
        check_env(env, skip_render_check=True)


def test_gymnasium_make() -> None:
    env = gym.make(
        "metatrade/Trading-v0", task_arrays=make_task_arrays(), lookback=4, episode_length=32
    )
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4 * 3 + 4,) and obs.dtype == np.float32
    assert env.unwrapped.window_shape == (4, 3) and env.unwrapped.account_dim == 4


def test_fill_at_next_open_and_reward_is_equity_change() -> None:
    ta = make_task_arrays(n=200)
    env = TradingEnv(ta, lookback=4, episode_length=10, initial_capital=100_000.0)
    obs, _ = env.reset(options={"start": 20})
    np.testing.assert_array_equal(obs[:12], ta.features[17:21].ravel())  # oldest bar first
    np.testing.assert_array_equal(obs[12:], [0.0, 0.0, 0.0, 0.0])

    obs, reward, *_, info = env.step(Action.BUY_LONG)
    qty = int((100_000.0 - 25.0) // ta.open[21])
    assert env.engine.entry_price == ta.open[21] and env.engine.quantity == qty
    equity = 100_000.0 - 25.0 + qty * (ta.close[21] - ta.open[21])
    assert info["equity"] == pytest.approx(equity)
    assert reward == pytest.approx((equity - 100_000.0) / 100_000.0, rel=1e-6)
    assert info["pnl_reward"] == reward
    assert obs[12] == 1.0 and obs[15] == pytest.approx(1 / 100)  # long, 1 bar held

    obs, reward, *_, info = env.step(Action.HOLD)
    obs, reward, *_, info = env.step(Action.CLOSE_LONG)
    net = qty * (ta.open[23] - ta.open[21]) - 60.0
    assert info["trade_closed"] and info["trade_pnl"] == pytest.approx(net)
    assert info["trade_exit_price"] == ta.open[23]
    assert info["equity"] == pytest.approx(100_000.0 + net)
    assert obs[12] == 0.0 and obs[13] == 0.0


def test_invalid_action_is_hold_with_penalty() -> None:
    cfg = TradingEnvConfig(lookback=2, episode_length=5, shaping=RewardShaping(0.5))
    env = TradingEnv(make_task_arrays(), cfg)
    env.reset(seed=3)
    _, reward, *_, info = env.step(Action.CLOSE_SHORT)
    assert info["invalid_action"] and info["equity"] == 1_000_000.0
    assert reward == -0.5 and info["pnl_reward"] == 0.0
    for bad in (-1, 5):  # not an action: an error, never a silent HOLD
        with pytest.raises(ValueError, match=f"action {bad}"):
            env.step(bad)


def test_truncation_at_window_end_and_backtest_mode() -> None:
    ta = make_task_arrays(n=300)
    env = TradingEnv(ta, lookback=8, episode_length=7, split="validation")
    obs, _ = env.reset(seed=0)
    lo, hi = ta.splits["validation"]
    assert lo <= env.start <= hi - 1 - 7
    flags = [env.step(Action.HOLD)[2:4] for _ in range(7)]
    assert flags[-1] == (False, True) and not any(any(f) for f in flags[:-1])

    bt = TradingEnv(ta, lookback=8, episode_length=None, split="test")
    bt.reset()
    lo, hi = ta.splits["test"]
    assert bt.start == lo and bt.max_episode_steps == hi - 1 - lo
    steps, done = 0, False
    while not done:
        *_, term, trunc, _ = bt.step(Action.BUY_LONG)
        steps, done = steps + 1, term or trunc
    assert steps == bt.max_episode_steps and bt.bar == hi - 1


def test_square_off_at_session_end() -> None:
    ta = make_task_arrays(n=200, bars_per_session=10)
    env = TradingEnv(ta, lookback=2, episode_length=20, square_off=True)
    env.reset(options={"start": 5})  # bar 9 ends the first session
    for _ in range(3):
        env.step(Action.SELL_SHORT)  # fills at open[6], then invalid
    *_, info = env.step(Action.HOLD)  # to bar 9
    assert info["squared_off"] and info["position"] == 0 and info["trade_closed"]
    assert info["trade_exit_price"] == ta.close[9]
    assert env.engine.trades[0].exit_cost == 35.0


def test_ruin_terminates() -> None:
    ta = make_task_arrays(n=200)
    # a 60% fee per entry ruins the account on the first trade
    cfg = TradingEnvConfig(lookback=2, episode_length=20, costs=CostModel(entry_fee=600_000.0))
    env = TradingEnv(ta, cfg)
    env.reset(seed=1)
    *_, terminated, truncated, info = env.step(Action.BUY_LONG)
    assert terminated and not truncated and info["equity"] <= 500_000.0


def test_seeded_resets_are_reproducible_and_bad_start_is_explained() -> None:
    ta = make_task_arrays()
    b = TradingEnv(ta, episode_length=50)
    assert (
        TradingEnv(ta, episode_length=50).reset(seed=7)[0].tolist() == b.reset(seed=7)[0].tolist()
    )
    with pytest.raises(ValueError, match="episode_length"):
        TradingEnv(ta, episode_length=10_000)
    with pytest.raises(ValueError, match="start 0 outside"):
        b.reset(options={"start": 0})
    with pytest.raises(TypeError, match="unknown TradingEnvConfig fields"):
        TradingEnv(ta, lookbak=3)


def test_no_look_ahead() -> None:
    """Changing every bar after k changes no observation or reward up to bar k."""
    ta = make_task_arrays(n=200, seed=4)
    k = 60
    rng = np.random.default_rng(0)
    future = {
        name: np.concatenate([getattr(ta, name)[: k + 1], getattr(ta, name)[k + 1 :] * 1.7])
        for name in ("open", "high", "low", "close")
    }
    feats = ta.features.copy()
    feats[k + 1 :] = rng.normal(size=feats[k + 1 :].shape)
    altered = dataclasses.replace(ta, features=feats, **future)
    envs = [TradingEnv(x, lookback=6, episode_length=80) for x in (ta, altered)]
    obs = [env.reset(options={"start": 20})[0] for env in envs]
    np.testing.assert_array_equal(*obs)
    for action in rng.integers(0, 5, size=k - 20):
        steps = [env.step(int(action)) for env in envs]
        np.testing.assert_array_equal(steps[0][0], steps[1][0])
        assert steps[0][1] == steps[1][1]
    assert envs[0].bar == k
    assert envs[0].step(4)[0].tolist() != envs[1].step(4)[0].tolist()  # bar k+1 differs
