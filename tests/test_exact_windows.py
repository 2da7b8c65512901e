"""PnlWindows and its samplers; Policy.logits_by_position; the objective under vmap."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from market_helpers import make_task_arrays
from metatrade.agents.policies import NetworkConfig, Policy, make_policy
from metatrade.exact import (
    FixedUnitsSizer,
    PnlWindows,
    build_windows,
    causal_volatility,
    exact_loss,
    expected_pnl,
    sample_window_pairs,
    window_quantity,
    windows_before,
)
from metatrade.market import CostModel, InstrumentSpec, TradingEnvConfig

F64 = torch.float64
TASKS = [
    make_task_arrays(n=900, seed=1, instrument="Nifty", timeframe="5"),
    make_task_arrays(n=700, seed=2, instrument="Bank_Nifty", timeframe="15", bars_per_session=25),
]
CONFIG = TradingEnvConfig(
    lookback=4,
    observation="position",
    square_off=True,
    instruments={"Bank_Nifty": (CostModel(20.0, 20.0, 1.0, 2.0), InstrumentSpec("Bank_Nifty", 15))},
)


def _mlp(hidden=(8,)):
    space = gym.spaces.Box(-np.inf, np.inf, (4 * 3 + 1,))
    return make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=hidden),
        space,
        gym.spaces.Discrete(5),
        dtype=F64,
        seed=0,
    )


def test_evaluation_windows_follow_adaptation_windows_inside_the_split() -> None:
    kwargs = {"window_bars": 20, "num_windows": 3, "num_eval_windows": 2, "gap": 5}
    adapt, evaluate = sample_window_pairs(TASKS, config=CONFIG, rng=0, **kwargs)
    assert adapt.features.shape == (2, 3, 20 + 3, 3) and evaluate.gap.shape == (2, 2, 20)
    assert (adapt.num_tasks, adapt.num_windows, adapt.window_bars, adapt.lookback) == (2, 3, 20, 4)
    a_start, e_start = adapt.start.numpy(), evaluate.start.numpy()
    np.testing.assert_array_equal(np.diff(a_start, axis=1), 20)  # back to back
    # the last adaptation mark (start + 20) is 5 bars before the first evaluation decision
    np.testing.assert_array_equal(e_start[:, 0], a_start[:, -1] + 20 + 5)
    for task, row in zip(TASKS, e_start, strict=True):
        lo, hi = task.split_range("train")
        assert a_start.min() >= lo and row.max() + 20 <= hi - 1
    again, _ = sample_window_pairs(TASKS, config=CONFIG, rng=0, **kwargs)
    assert torch.equal(again.start, adapt.start)
    other, _ = sample_window_pairs(TASKS, config=CONFIG, rng=1, **kwargs)
    assert not torch.equal(other.start, adapt.start)
    with pytest.raises(ValueError, match=r"task Nifty:5: split 'train' allows .*too few bars"):
        sample_window_pairs(TASKS, window_bars=200, num_windows=2, config=CONFIG, rng=0)


def test_windows_hold_the_ledgers_prices_costs_and_a_causal_volatility() -> None:
    task = TASKS[1]
    w = windows_before([task], [300], window_bars=10, num_windows=2, config=CONFIG, dtype=F64)
    np.testing.assert_array_equal(w.start.numpy(), [[280, 290]])
    q = window_quantity(task, np.array([280, 290]), CONFIG)
    assert (q % 15 == 0).all() and (q * task.close[[280, 290]] <= 1e6).all()  # whole lots
    t = np.arange(290, 300)
    np.testing.assert_allclose(w.gap[0, 1], q[1] * (task.open[t + 1] - task.close[t]) / 1e6)
    np.testing.assert_allclose(w.bar[0, 1], q[1] * (task.close[t + 1] - task.open[t + 1]) / 1e6)
    # square-off at session ends, and the final exit at the window's last close
    np.testing.assert_array_equal(w.squared[0, 1, :-1], task.session_end[t + 1][:-1])
    assert (w.squared[:, :, -1] == 1.0).all()
    np.testing.assert_array_equal(w.features[0, 1], task.features[287:300])  # L-1 rows before
    assert w.entry_fee[0, 0] == 20.0 / 1e6 and w.slip[0, 0] == pytest.approx(2e-4)
    returns = task.close[1:291] / task.close[:290] - 1.0
    vol = causal_volatility(task.close, np.array([290]), vol_bars=50)
    assert vol[0] == pytest.approx(returns[-50:].std(ddof=1))
    with pytest.raises(ValueError, match="window start 300 outside"):
        build_windows([task], [[300]], window_bars=300, config=CONFIG)
    with pytest.raises(ValueError, match="cannot buy one lot"):
        build_windows(
            [task], [[300]], window_bars=10, config=CONFIG.with_overrides(initial_capital=1e3)
        )


def test_vmapped_loss_and_gradient_equal_the_per_task_loop() -> None:
    policy = _mlp()
    params = {k: v.detach() for k, v in policy.named_parameters()}
    per_task = {k: torch.stack([v, v * 1.5]) for k, v in params.items()}
    adapt, _ = sample_window_pairs(TASKS, window_bars=16, num_windows=2, config=CONFIG, rng=1)
    adapt = adapt.to(F64)
    assert PnlWindows.from_tensors(adapt.tensors()).start.dtype == torch.int64

    def loss(p, w):
        return exact_loss(policy, p, w)

    losses = vmap(loss)(per_task, adapt.tensors())
    grads = vmap(grad(loss))(per_task, adapt.tensors())
    for i in range(2):
        one = {k: v[i : i + 1] for k, v in adapt.tensors().items()}
        p = {k: v[i] for k, v in per_task.items()}
        assert losses[i].item() == pytest.approx(loss(p, one).item(), rel=1e-12)
        g = grad(loss)(p, one)
        for k in g:
            torch.testing.assert_close(grads[k][i], g[k], rtol=1e-10, atol=1e-14)
    assert expected_pnl(policy, params, adapt).shape == (2, 2)


@pytest.mark.parametrize("kind", ["mlp", "gru", "moe"])
def test_logits_by_position_equals_the_forward_of_each_observation(kind: str) -> None:
    space = gym.spaces.Box(-np.inf, np.inf, (4 * 3 + 1,))
    policy = make_policy(
        NetworkConfig(kind=kind, hidden_sizes=(8, 8)),
        space,
        gym.spaces.Discrete(5),
        dtype=F64,
        seed=0,
        window_shape=(4, 3),
        account_dim=1,
    )
    params = {k: v.detach() for k, v in policy.named_parameters()}
    bars = torch.randn(2, 11, 3, dtype=F64)
    accounts = torch.tensor([[-1.0], [0.0], [1.0]], dtype=F64)
    out = policy.logits_by_position(params, bars, accounts)
    assert out.shape == (2, 8, 3, 5)
    for i in (0, 7):
        for p in range(3):
            obs = torch.cat([bars[1, i : i + 4].reshape(-1), accounts[p]])
            torch.testing.assert_close(out[1, i, p], policy(obs), rtol=1e-12, atol=1e-14)
    generic = Policy.logits_by_position(policy, params, bars, accounts)
    torch.testing.assert_close(out, generic, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="obs_dim=13 is not L"):
        policy.logits_by_position(params, torch.randn(11, 5, dtype=F64), accounts)


def test_fixed_units_sizer_trades_whole_lots_and_rejects_nonsense() -> None:
    sizer = FixedUnitsSizer(100)
    assert sizer.units(1.0, 2.0, 0.0, 0.0, 15) == 90
    np.testing.assert_array_equal(
        sizer.units_array(np.ones(2), np.ones(2), np.zeros(2), np.zeros(2), np.array([15.0, 1.0])),
        [90.0, 100.0],
    )
    with pytest.raises(ValueError, match="quantity"):
        FixedUnitsSizer(0)
    with pytest.raises(ValueError, match="Categorical"):
        gauss = make_policy(
            NetworkConfig(kind="mlp"), gym.spaces.Box(-1, 1, (13,)), gym.spaces.Box(-1, 1, (1,))
        )
        w = build_windows(TASKS[:1], [[100]], window_bars=5, config=CONFIG)
        expected_pnl(gauss, dict(gauss.named_parameters()), w)
