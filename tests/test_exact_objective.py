"""The exact expected P&L against the ledger, in float64 on the embedded real bars, under
both action spaces (``env.actions``: the five orders, target positions).

Every window ends as the evaluation ledgers end it: a position still open after the last
bar is closed at its close, paying the exit (``liquidate_at_end``, ``run_backtest``).
(a) a stochastic policy: exact expectation = mean of sampled ledger episodes (3 SE);
(b) one-hot probabilities: exact = the ledger's P&L of that action sequence (1e-9 relative);
(c) gradients and the one-step meta-gradient = central finite differences;
(d) no look-ahead: bars after t change nothing the recursion holds at or before t.
Exactness mode: the ledger sizes entries with FixedUnitsSizer (the objective's one
approximation, constant notional per bar, is measured separately and bounded).
"""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data import DataLoader
from metatrade.exact import (
    FixedUnitsSizer,
    build_windows,
    exact_loss,
    expected_pnl,
    pnl_moments,
    position_recursion,
    recursion_from_probs,
)
from metatrade.market import (
    BatchTradingEnv,
    CostModel,
    FixedFractionSizer,
    InstrumentSpec,
    TradingEnv,
    TradingEnvConfig,
)
from metatrade.market.actions import Action

F64 = torch.float64
LOOKBACK, N_BARS = 4, 48
TASKS = (("Nifty", "15"), ("Bank_Nifty", "5"), ("Finnifty", "30"))
# Proportional costs, slippage, lots, square-off at each session's last bar: every cost rule.
EXACT = TradingEnvConfig(
    lookback=LOOKBACK,
    episode_length=N_BARS,
    observation="position",
    square_off=True,
    sizer=FixedUnitsSizer(60),
    costs=CostModel(25.0, 35.0, 2.0, 3.0),
    instruments={
        "Bank_Nifty": (CostModel(20.0, 20.0, 1.0, 5.0), InstrumentSpec("Bank_Nifty", 15)),
        # side-only charges: stamp duty on buys, STT on sells (the nse_index_futures terms)
        "Finnifty": (CostModel(23.6, 23.6, 0.2, 1.0, 0.2, 2.0), InstrumentSpec("Finnifty")),
    },
)


@pytest.fixture(scope="module")
def arrays() -> list:
    loader = DataLoader()
    return [loader.get_task_arrays(*task) for task in TASKS]


ACTIONS = pytest.mark.parametrize("actions", ["orders", "target"])
NUM = {"orders": 5, "target": 3}


def _policy(seed: int, hidden: tuple[int, ...] = (16,), scale: float = 1.0, actions="orders"):
    obs = gym.spaces.Box(-np.inf, np.inf, (LOOKBACK * 22 + 1,))
    space = gym.spaces.Discrete(NUM[actions])
    pol = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=hidden), obs, space, dtype=F64, seed=seed
    )
    params = {k: v.detach().clone() for k, v in pol.named_parameters()}
    params["net.out.weight"] *= scale  # 0.01 gain at init: logits ~ N(0, (scale / 100)^2)
    return pol, params


def _ledger_pnl(arrays, config, start: int, choose) -> tuple[float, int]:
    """P&L (fraction of C0) of one TradingEnv episode from ``start``, an open position closed
    at the last close with its exit cost (as ``run_backtest``); choose(step, obs) -> a."""
    env = TradingEnv(arrays, config)
    obs, _ = env.reset(options={"start": start})
    for i in range(config.episode_length):
        obs, _, term, trunc, info = env.step(choose(i, obs))
        assert not term
    assert trunc
    eng = env.engine
    if eng.position != 0:
        close = Action.CLOSE_LONG if eng.position > 0 else Action.CLOSE_SHORT
        assert eng.execute_trade(close, float(arrays.close[env.bar])).accepted
    return (eng.equity - config.initial_capital) / config.initial_capital, len(eng.trades)


@ACTIONS
def test_one_hot_action_tables_match_the_ledger_exactly(arrays, actions: str) -> None:
    """(b) Every (action, position) pair, invalid orders or reversals, square-offs, both
    sides, the final exit."""
    rng = np.random.default_rng(0)
    config = EXACT.with_overrides(actions=actions)
    starts = np.array([[600, 1500], [3000, 9000], [300, 700]])
    windows = build_windows(arrays, starts, window_bars=N_BARS, config=config, dtype=F64)
    n = NUM[actions]
    table = rng.integers(0, n, size=(3, 2, N_BARS, 3))  # action per bar, position
    probs = torch.nn.functional.one_hot(torch.from_numpy(table), n).to(F64)
    exact = recursion_from_probs(probs, windows)["expected_reward"].sum(-1)
    trades = 0
    for i, task_arrays in enumerate(arrays):
        for j, start in enumerate(starts[i]):
            pnl, n_trades = _ledger_pnl(
                task_arrays,
                config,
                int(start),
                lambda k, o, i=i, j=j: table[i, j, k, int(o[-1]) + 1],
            )
            trades += n_trades
            assert exact[i, j].item() == pytest.approx(pnl, rel=1e-9, abs=1e-15)
    assert trades > 30


# Only side-only charges, far apart (a buy pays 0.5 bps, a sell 8 bps), on every task.
SIDE_ONLY = EXACT.with_overrides(costs=CostModel(0.0, 0.0, buy_bps=0.5, sell_bps=8.0))
SIDE_ONLY = replace(SIDE_ONLY, instruments={})


@ACTIONS
def test_side_only_charges_are_priced_per_leg_as_the_ledger_does(arrays, actions: str) -> None:
    """(b) with charges on one side only: each leg pays its own side's rate (a long entry and
    a short's exit buy; a short entry, a long's exit and a long's square-off or final exit
    sell), in both action spaces, a target reversal's two legs included; exact = ledger to
    1e-9, and swapping the two rates moves the exact P&L (the side of each leg is read)."""
    rng = np.random.default_rng(1)
    config = SIDE_ONLY.with_overrides(actions=actions)
    starts = np.array([[600, 1500], [3000, 9000], [300, 700]])
    windows = build_windows(arrays, starts, window_bars=N_BARS, config=config, dtype=F64)
    n = NUM[actions]
    table = rng.integers(0, n, size=(3, 2, N_BARS, 3))
    probs = torch.nn.functional.one_hot(torch.from_numpy(table), n).to(F64)
    exact = recursion_from_probs(probs, windows)["expected_reward"].sum(-1)
    for i, task_arrays in enumerate(arrays):
        for j, start in enumerate(starts[i]):
            pnl, _ = _ledger_pnl(
                task_arrays,
                config,
                int(start),
                lambda k, o, i=i, j=j: table[i, j, k, int(o[-1]) + 1],
            )
            assert exact[i, j].item() == pytest.approx(pnl, rel=1e-9, abs=1e-15)
    swapped = replace(windows, buy_rate=windows.sell_rate, sell_rate=windows.buy_rate)
    moved = recursion_from_probs(probs, swapped)["expected_reward"].sum(-1)
    assert not torch.allclose(moved, exact, rtol=1e-6, atol=0.0)


@ACTIONS
def test_deterministic_policy_matches_the_ledger_exactly(arrays, actions: str) -> None:
    """(b) A policy whose probabilities are exactly one-hot, through logits_by_position."""
    pol, params = _policy(1, scale=1e7, actions=actions)
    config = EXACT.with_overrides(actions=actions)
    starts = np.array([[800], [5000], [400]])
    windows = build_windows(arrays, starts, window_bars=N_BARS, config=config, dtype=F64)
    rec = position_recursion(pol, params, windows)
    assert (rec["probs"].max(-1).values == 1.0).all()  # one-hot in float64
    trades = 0
    for i, task_arrays in enumerate(arrays):

        def act(_: int, obs: np.ndarray) -> int:
            x = torch.from_numpy(obs).to(F64)
            return int(torch.func.functional_call(pol, params, (x,)).argmax())

        pnl, n = _ledger_pnl(task_arrays, config, int(starts[i, 0]), act)
        trades += n
        assert rec["expected_reward"][i, 0].sum().item() == pytest.approx(pnl, rel=1e-9)
    assert trades > 3


@ACTIONS
def test_stochastic_policy_matches_the_mean_of_sampled_ledger_episodes(
    arrays, actions: str
) -> None:
    """(a) The protocol's ledger (a BatchTradingEnv that pays the final exit,
    ``liquidate_at_end``) in the position-observation mode, 3000 episodes per task."""
    pol, params = _policy(2, scale=150.0, actions=actions)
    config = EXACT.with_overrides(actions=actions)
    episodes = 3000
    starts = np.array([[900], [7000], [500]])
    windows = build_windows(arrays, starts, window_bars=N_BARS, config=config, dtype=F64)
    exact = expected_pnl(pol, params, windows)[:, 0].numpy()
    env = BatchTradingEnv(arrays, episodes, config.with_overrides(liquidate_at_end=True), seed=0)
    obs = env.reset(starts=np.repeat(starts, episodes, axis=1))
    rng = np.random.default_rng(0)
    for _ in range(N_BARS):
        with torch.no_grad():
            logits = torch.func.functional_call(pol, params, (torch.from_numpy(obs).to(F64),))
        cdf = torch.softmax(logits, -1).cumsum(-1).numpy()
        actions_ = (rng.random((3, episodes, 1)) > cdf).sum(-1).clip(0, NUM[actions] - 1)
        obs, _, term, trunc, info = env.step(actions_)
        assert not term.any()
    assert trunc.all()
    total = info["final_equity"] / config.initial_capital - 1.0
    mean, se = total.mean(1), total.std(1, ddof=1) / np.sqrt(episodes)
    assert (np.abs(total).max(1) > 0).all() and (se > 0).all()
    np.testing.assert_array_less(np.abs(mean - exact), 3.0 * se)
    # The variance recursion agrees with the sampled variance too (loosely: 10%).
    m1, m2 = pnl_moments(pol, params, windows)
    np.testing.assert_allclose(m1[:, 0].numpy(), exact, rtol=1e-10)
    np.testing.assert_allclose((m2 - m1 * m1)[:, 0].numpy(), total.var(1), rtol=0.1)


def _flat(params: dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in params.values()])


def _unflat(vec: torch.Tensor, like: dict) -> dict:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out


@pytest.mark.parametrize(
    ("risk", "actions"), [(0.0, "orders"), (0.5, "orders"), (0.0, "target"), (0.5, "target")]
)
def test_gradient_and_meta_gradient_match_finite_differences(
    arrays, risk: float, actions: str
) -> None:
    """(c) grad of the loss and of J_eval(theta + alpha * grad J_adapt(theta))."""
    pol, params = _policy(3, hidden=(8,), scale=30.0, actions=actions)
    config = EXACT.with_overrides(actions=actions)
    adapt = build_windows(arrays[:1], [[1000, 1048]], window_bars=N_BARS, config=config, dtype=F64)
    evaluate = build_windows(arrays[:1], [[1100]], window_bars=N_BARS, config=config, dtype=F64)
    adapt, evaluate = (w.tensors() for w in (adapt, evaluate))
    alpha = 0.05

    def loss(p: dict, w: dict) -> torch.Tensor:
        return exact_loss(pol, p, {k: v[0] for k, v in w.items()}, risk=risk)

    def meta(p: dict) -> torch.Tensor:
        g = torch.func.grad(loss)(p, adapt)
        return loss({k: p[k] - alpha * g[k] for k in p}, evaluate)

    direction = torch.randn(
        _flat(params).shape, dtype=F64, generator=torch.Generator().manual_seed(0)
    )
    eps = 1e-6
    for fn, name in ((lambda p: loss(p, adapt), "loss"), (meta, "meta")):
        grad = _flat(torch.func.grad(fn)(params))
        plus = fn(_unflat(_flat(params) + eps * direction, params))
        minus = fn(_unflat(_flat(params) - eps * direction, params))
        fd = (plus - minus) / (2 * eps)
        assert abs(fd.item()) > 1e-3, name
        assert (grad @ direction).item() == pytest.approx(fd.item(), rel=1e-6), name
    # the inner step moves the meta-objective: the second-order term is not negligible
    first_order = _flat(torch.func.grad(loss)(_unflat(_flat(params), params), evaluate))
    assert (first_order - _flat(torch.func.grad(meta)(params))).norm() > 1e-3


def test_no_look_ahead(arrays) -> None:
    """(d) Perturbing every bar after decision bar s + j (prices and features) changes no
    probability, transition or occupancy up to it, nor any reward realised by then."""
    pol, params = _policy(4, scale=30.0)
    task, start, j = arrays[0], 2000, 20
    cut = start + j + 1  # rows >= cut change
    rng = np.random.default_rng(1)
    noise = np.exp(rng.normal(0.0, 0.01, len(task) - cut))
    feats = task.features.copy()
    feats[cut:] += rng.normal(size=feats[cut:].shape).astype(np.float32)
    future = replace(
        task,
        open=np.concatenate([task.open[:cut], task.open[cut:] * noise]),
        close=np.concatenate([task.close[:cut], task.close[cut:] * noise[::-1]]),
        features=feats,
        session_end=np.concatenate([task.session_end[:cut], ~task.session_end[cut:]]),
    )
    recs = [
        position_recursion(
            pol, params, build_windows([a], [[start]], window_bars=N_BARS, config=EXACT, dtype=F64)
        )
        for a in (task, future)
    ]
    # index k = decision bar s + k; occupancy[k] = position held over bar s + k's close;
    # expected_reward[k] is realised at bar s + k + 1.
    before = {"probs": j + 1, "transitions": j + 1, "occupancy": j + 1, "expected_reward": j}
    for name, upto in before.items():
        a, b = recs[0][name][0, 0], recs[1][name][0, 0]
        torch.testing.assert_close(a[:upto], b[:upto], rtol=0, atol=0, msg=name)
        assert not torch.equal(a[upto + 1 :], b[upto + 1 :]), name  # the perturbation bites


def test_constant_notional_approximation_is_bounded(arrays) -> None:
    """With the ledger's default sizer (all equity in whole lots, fixed at entry) the
    objective's constant notional per bar is off by a few percent of the path's P&L."""
    config = EXACT.with_overrides(sizer=FixedFractionSizer(), episode_length=128)
    rng = np.random.default_rng(5)
    starts = np.array([[2000, 4000], [8000, 11000], [1000, 1500]])
    windows = build_windows(arrays, starts, window_bars=128, config=config, dtype=F64)
    table = np.where(rng.random((3, 2, 128, 3)) < 0.9, 4, rng.integers(0, 4, (3, 2, 128, 3)))
    probs = torch.nn.functional.one_hot(torch.from_numpy(table), 5).to(F64)
    steps = recursion_from_probs(probs, windows)["expected_reward"]
    for i, task_arrays in enumerate(arrays):
        for j, start in enumerate(starts[i]):
            pnl, n = _ledger_pnl(
                task_arrays,
                config,
                int(start),
                lambda k, o, i=i, j=j: table[i, j, k, int(o[-1]) + 1],
            )
            assert n > 0
            assert abs(steps[i, j].sum().item() - pnl) <= 0.05 * steps[i, j].abs().sum().item()
