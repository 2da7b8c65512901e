"""BatchTradingEnv: bit-identical to TradingEnv for the same actions and starts; protocol."""

from __future__ import annotations

import numpy as np
import pytest

from market_helpers import make_task_arrays
from metatrade.market import CostModel, InstrumentSpec, RewardShaping, TradingEnv, TradingEnvConfig
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.meta.protocols import BatchEnv

TASKS = [
    make_task_arrays(n=300, seed=1, instrument="Nifty", timeframe="5", bars_per_session=75),
    make_task_arrays(n=180, seed=2, instrument="Bank_Nifty", timeframe="15", bars_per_session=25),
    make_task_arrays(n=250, seed=3, instrument="Finnifty", timeframe="3", bars_per_session=7),
]
SHAPED = TradingEnvConfig(
    lookback=5,
    episode_length=30,
    square_off=True,
    instruments={
        "Bank_Nifty": (CostModel(20.0, 20.0, 3.0, 2.0), InstrumentSpec("Bank_Nifty", 15)),
        "Finnifty": (CostModel(25.0, 35.0, 0.0, 7.0), InstrumentSpec("Finnifty", 40)),
    },
    shaping=RewardShaping(1e-3, 2e-4, 5e-4, 0.1),
)
# Backtest mode; 300k INR entry fees ruin accounts after a couple of entries.
RUINOUS = TradingEnvConfig(
    lookback=3, episode_length=None, split="test", costs=CostModel(300_000.0, 35.0)
)
# The position-only observation (metatrade.exact's policies), same MDP otherwise.
POSITION_OBS = SHAPED.with_overrides(observation="position")
# Side-only charges (stamp duty on buys, STT on sells) and lots revised mid-series.
SIDE_COSTS = SHAPED.with_overrides(
    instruments={
        "Nifty": (
            CostModel(23.6, 23.6, 0.2, 1.0, buy_bps=0.3, sell_bps=2.5),
            InstrumentSpec("Nifty", 5, ((int(TASKS[0].timestamps[150]), 15),)),
        ),
        "Bank_Nifty": (
            CostModel(20.0, 20.0, 3.0, 2.0, buy_bps=2.0),
            InstrumentSpec("Bank_Nifty", 15, ((int(TASKS[1].timestamps[90]), 30),)),
        ),
    }
)
INFO_KEYS = (
    "pnl_reward",
    "equity",
    "cash",
    "position",
    "bar",
    "invalid_action",
    "order_cost",
    "squared_off",
)
TRADE_KEYS = ("trade_pnl", "trade_side", "trade_quantity", "trade_entry_price", "trade_exit_price")


@pytest.mark.parametrize(
    "config",
    [
        SHAPED,
        RUINOUS,
        POSITION_OBS,
        SIDE_COSTS,
        *(c.with_overrides(actions="target") for c in (SHAPED, RUINOUS, SIDE_COSTS)),
    ],
    ids=[
        "shaped",
        "backtest_ruin",
        "position_obs",
        "side_costs_dated_lots",
        "target_shaped",
        "target_backtest_ruin",
        "target_side_costs_dated_lots",
    ],
)
def test_batch_matches_single_env_bit_for_bit(config: TradingEnvConfig) -> None:
    """Both action spaces: with target positions a reversal closes and opens in one step."""
    n_ep, n_steps = 3, 90
    batch = BatchTradingEnv(TASKS, n_ep, config, seed=0)
    obs = batch.reset(seed=0)
    singles = [[TradingEnv(ta, config) for _ in range(n_ep)] for ta in TASKS]
    for i, row in enumerate(singles):
        for j, env in enumerate(row):
            s_obs, _ = env.reset(options={"start": int(batch.starts[i, j])})
            np.testing.assert_array_equal(s_obs, obs[i, j])
    rng = np.random.default_rng(42)
    batch_trades: list[list[tuple]] = [[] for _ in range(len(TASKS) * n_ep)]
    single_trades: list[list[tuple]] = [[] for _ in range(len(TASKS) * n_ep)]
    single_info_trades: list[list[tuple]] = [[] for _ in range(len(TASKS) * n_ep)]
    dones = flips = 0
    held = np.zeros((len(TASKS), n_ep))
    for _ in range(n_steps):
        actions = rng.integers(0, batch.action_space.n, size=(len(TASKS), n_ep))
        obs, reward, term, trunc, info = batch.step(actions)
        flips += int(np.sum(held * info["position"] < 0))  # a reversal within one step
        held = np.where(term | trunc, 0, info["position"])
        for i, row in enumerate(singles):
            for j, env in enumerate(row):
                k = i * n_ep + j
                s_obs, s_rew, s_term, s_trunc, s_info = env.step(int(actions[i, j]))
                np.testing.assert_array_equal(s_obs, info["final_obs"][i, j])
                assert (s_rew, s_term, s_trunc) == (reward[i, j], term[i, j], trunc[i, j])
                for key in INFO_KEYS:
                    assert s_info[key] == info[key][i, j], key
                assert s_info["trade_closed"] == info["trade_closed"][i, j]
                if info["trade_closed"][i, j]:
                    batch_trades[k].append(tuple(info[key][i, j] for key in TRADE_KEYS))
                    single_info_trades[k].append(tuple(s_info[key] for key in TRADE_KEYS))
                if s_term or s_trunc:
                    dones += 1
                    single_trades[k] += [
                        (t.net_pnl, t.side, t.quantity, t.entry_price, t.exit_price)
                        for t in env.engine.trades
                    ]
                    s_obs, _ = env.reset(options={"start": int(batch.starts[i, j])})
                    np.testing.assert_array_equal(s_obs, obs[i, j])
    for i, row in enumerate(singles):
        for j, env in enumerate(row):
            k = i * n_ep + j
            single_trades[k] += [
                (t.net_pnl, t.side, t.quantity, t.entry_price, t.exit_price)
                for t in env.engine.trades
            ]
            assert env.engine.equity == batch._equity[k]  # final equity, bit for bit
    assert dones > 0 and sum(map(len, batch_trades)) > 10
    assert batch_trades == single_info_trades  # the (last) trade each step closed
    if config.actions == "orders":  # one trade a step at most: info lists every trade
        assert batch_trades == single_trades and flips == 0
    else:  # a reversal and a square-off in one step close two; info holds the last
        assert sum(map(len, single_trades)) >= sum(map(len, batch_trades)) and flips > 5
    assert (
        batch.action_space.n
        == singles[0][0].action_space.n
        == {"orders": 5, "target": 3}[config.actions]
    )


@pytest.mark.parametrize("actions", ["orders", "target"])
def test_liquidating_episodes_end_with_the_single_envs_final_equity(actions: str) -> None:
    """``liquidate_at_end`` (every evaluation ledger): each ended episode's
    ``info["final_equity"]`` is the single env's, bit for bit, and the equity of closing the
    position by hand (``TradingEnv.liquidate``) on an env without the option."""
    config = SIDE_COSTS.with_overrides(actions=actions, square_off=False, liquidate_at_end=True)
    n_ep = 3
    batch = BatchTradingEnv(TASKS, n_ep, config, seed=0)
    batch.reset(seed=0)
    plain_config = config.with_overrides(liquidate_at_end=False)
    pairs = [
        [(TradingEnv(ta, config), TradingEnv(ta, plain_config)) for _ in range(n_ep)]
        for ta in TASKS
    ]
    for i, row in enumerate(pairs):
        for j, envs in enumerate(row):
            for env in envs:
                env.reset(options={"start": int(batch.starts[i, j])})
    rng = np.random.default_rng(7)
    ended = open_at_end = 0
    for _ in range(70):
        actions_ = rng.integers(0, batch.action_space.n, size=(len(TASKS), n_ep))
        _, _, term, trunc, info = batch.step(actions_)
        for i, row in enumerate(pairs):
            for j, (env, plain) in enumerate(row):
                _, _, s_term, s_trunc, s_info = env.step(int(actions_[i, j]))
                _, _, _, _, p_info = plain.step(int(actions_[i, j]))
                if not (s_term or s_trunc):
                    assert np.isnan(info["final_equity"][i, j]) and "final_equity" not in s_info
                    continue
                ended += 1
                open_at_end += p_info["position"] != 0
                final = s_info["final_equity"]
                assert final == info["final_equity"][i, j] == plain.liquidate()
                assert env.engine.trades == plain.engine.trades
                for e in (env, plain):
                    e.reset(options={"start": int(batch.starts[i, j])})
    assert ended > 5 and open_at_end > 3


def test_protocol_shapes_and_autoreset() -> None:
    env = BatchTradingEnv(TASKS[:2], 4, lookback=4, episode_length=6, seed=1)
    assert isinstance(env, BatchEnv)
    assert (env.num_tasks, env.episodes_per_task, env.max_episode_steps) == (2, 4, 6)
    obs = env.reset()
    assert obs.shape == (2, 4, 4 * 3 + 4) and obs.dtype == np.float32
    assert env.observation_space.shape == obs.shape[2:] and env.window_shape == (4, 3)
    first_starts = env.starts.copy()
    for _ in range(6):
        obs, rew, term, trunc, info = env.step(np.full((2, 4), 4))
        assert rew.shape == (2, 4) and rew.dtype == np.float32
        assert all(v.shape[:2] == (2, 4) for v in info.values())
    assert trunc.all() and not term.any()
    assert (info["bar"] == first_starts + 6).all()
    # same-step autoreset: fresh episodes, final_obs holds the last observation
    assert (env.bars == env.starts).all()
    lo = TASKS[0].features[first_starts[0, 0] + 3 : first_starts[0, 0] + 7].ravel()
    np.testing.assert_array_equal(info["final_obs"][0, 0, :12], lo)


def test_seeded_reset_is_reproducible_and_bad_input_is_explained() -> None:
    a = BatchTradingEnv(TASKS, 2, lookback=4, episode_length=20)
    np.testing.assert_array_equal(a.reset(seed=5), a.reset(seed=5))
    with pytest.raises(ValueError, match="outside"):
        a.reset(starts=np.zeros((3, 2), dtype=int))
    with pytest.raises(ValueError, match="actions shape"):
        a.step(np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="feature width"):
        BatchTradingEnv([TASKS[0], make_task_arrays(n_features=4)], 1, episode_length=20)


def test_position_observation_is_the_window_and_the_position_only() -> None:
    full = BatchTradingEnv(TASKS, 2, SHAPED, seed=3)
    pos = BatchTradingEnv(TASKS, 2, POSITION_OBS, seed=3)
    assert pos.account_dim == 1 and pos.observation_space.shape == (5 * 3 + 1,)
    np.testing.assert_array_equal(pos.reset(seed=3), full.reset(seed=3)[..., :16])
    rng = np.random.default_rng(0)
    for _ in range(40):
        actions = rng.integers(0, 5, size=(3, 2))
        f_obs, f_rew, *_ = full.step(actions)
        p_obs, p_rew, *_ = pos.step(actions)
        np.testing.assert_array_equal(p_obs, f_obs[..., :16])  # window + position
        np.testing.assert_array_equal(p_rew, f_rew)  # same MDP, same rewards
    assert (np.abs(p_obs[..., 15]) <= 1).all() and np.isin(p_obs[..., 15], (-1, 0, 1)).all()
    with pytest.raises(ValueError, match="observation"):
        TradingEnvConfig(observation="account")
