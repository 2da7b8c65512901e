"""Classical adaptive baselines: each recovers its own task's oracle, fits on the adaptation
rows alone, trades causally and is scored in the ledger."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from classical_helpers import ar1_task, seasonal_task, trend_task
from metatrade.evaluation.backtest import fixed_positions, run_backtest
from metatrade.evaluation.baselines import (
    CLASSICAL,
    AdaptiveRule,
    ClassicalConfig,
    fit_classical,
    ledger_returns,
    session_buckets,
    window_arrays,
)
from metatrade.market.config import TradingEnvConfig
from metatrade.market.costs import CostModel

ENV = TradingEnvConfig(lookback=4, costs=CostModel(proportional_bps=0.2))

# (task, the row whose true rule it is, what classical-selected must choose)
CASES = {
    "ar_plus": (lambda: ar1_task(0.3, seed=0), "AR(1)", "ar"),
    "ar_minus": (lambda: ar1_task(-0.3, seed=1), "AR(1)", "ar"),
    "momentum": (lambda: trend_task(0.6, 4, seed=2), "momentum", "momentum"),
    "reversal": (lambda: trend_task(-0.6, 4, seed=3), "reversal", "reversal"),
    "time_of_day": (
        lambda: seasonal_task((3e-4, -3e-4, 2e-4, -2e-4, 3e-4, -3e-4), seed=4),
        "time-of-day",
        "time_of_day",
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    make, row, pick = CASES[request.param]
    arrays, oracle = make()
    fits = fit_classical(CLASSICAL, arrays, arrays.split_range("train"), env=ENV)
    return arrays, oracle, fits, row, pick


def test_each_rule_recovers_the_oracle_on_its_own_task(case) -> None:
    """Fitted on the train split, ledger P&L on the test split >= 0.9 of the oracle's."""
    arrays, oracle, fits, row, pick = case
    oracle_pnl = run_backtest(fixed_positions("oracle", oracle), arrays, config=ENV).total_return
    assert oracle_pnl > 0.05
    for name in (row, "classical-selected"):
        pnl = run_backtest(fits[name], arrays, config=ENV).total_return
        assert pnl >= 0.9 * oracle_pnl, f"{name}: {pnl:.4f} vs oracle {oracle_pnl:.4f}"
    chosen = fits["classical-selected"]
    assert chosen.params["rule"] == pick
    if pick in ("momentum", "reversal"):
        assert chosen.params["h"] == 4  # the generator's horizon
    others = [f.insample_return for k, f in fits.items() if k != "classical-selected"]
    assert chosen.insample_return == max(others)
    alone = AdaptiveRule(pick).fit(arrays, arrays.split_range("train"), env=ENV)
    assert alone.params == fits[row].params  # one rule alone fits as it does among all


def test_fit_reads_only_the_adaptation_rows(case) -> None:
    arrays, _, _, _, _ = case
    hi = arrays.split_range("train")[1]
    lo, hi = rows = (hi - 1500, hi)
    fits = fit_classical(CLASSICAL, arrays, rows, env=ENV)
    rng = np.random.default_rng(0)
    outside = np.ones(len(arrays), dtype=bool)
    outside[lo:hi] = False

    def perturbed(mask):
        scale = np.where(mask, np.exp(rng.normal(0, 0.01, len(arrays))), 1.0)
        cols = {k: getattr(arrays, k) * scale for k in ("open", "high", "low", "close")}
        return replace(arrays, **cols, features=arrays.features + mask[:, None])

    again = fit_classical(CLASSICAL, perturbed(outside), rows, env=ENV)
    for k, f in fits.items():
        assert again[k].params == f.params and again[k].insample_return == f.insample_return
    inside = ~outside
    changed = fit_classical(CLASSICAL, perturbed(inside), rows, env=ENV)
    assert any(changed[k].insample_return != f.insample_return for k, f in fits.items())


def test_positions_use_bars_up_to_t_only(case) -> None:
    arrays, _, fits, _, _ = case
    t = len(arrays) - 300
    after = np.arange(len(arrays)) > t
    rng = np.random.default_rng(1)
    scale = np.where(after, np.exp(rng.normal(0, 0.02, len(arrays))), 1.0)
    cols = {k: getattr(arrays, k) * scale for k in ("open", "high", "low", "close")}
    changed = replace(arrays, **cols)
    for name, rule in fits.items():
        base, moved = rule.positions(arrays), rule.positions(changed)
        assert np.array_equal(base[: t + 1], moved[: t + 1]), name
        assert set(np.unique(base)) <= {-1, 0, 1}
    assert any(not np.array_equal(r.positions(arrays), r.positions(changed)) for r in fits.values())


def test_insample_return_is_the_scalar_ledgers_backtest() -> None:
    """The in-sample P&L equals ``run_backtest`` (TradingEnv + engine, exit cost paid) of the
    same positions over the window: the ledger's costs, not a frictionless proxy."""
    arrays, _ = ar1_task(0.3, n=3000, seed=5)
    rows = (1000, 1600)
    fits = fit_classical(["momentum", "reversal"], arrays, rows, env=ENV)
    win = window_arrays(arrays, rows)
    for f in fits.values():
        pos = f.positions(win)  # computed on the window alone: what the fit traded
        one = replace(ENV, lookback=1)  # from the window's first row, as the fit traded
        bt = run_backtest(fixed_positions("x", pos), win, split="window", config=one)
        assert f.insample_return == pytest.approx(bt.total_return, rel=1e-12, abs=1e-12)
        assert bt.trades.shape[0] > 10  # it traded, and paid for it
    free = ledger_returns(
        arrays, rows, [fits["momentum"].positions(win)], replace(ENV, costs=CostModel(0, 0, 0, 0))
    )
    assert free[0] > fits["momentum"].insample_return


def test_session_buckets_follow_the_next_bar() -> None:
    arrays, _ = ar1_task(0.1, n=600, seed=6)
    b = session_buckets(arrays, 5)
    assert b.min() == 0 and b.max() == 4
    assert np.all(b[arrays.session_end] == 0)  # next bar opens a session
    assert np.all(np.diff(b)[~arrays.session_end[1:]] >= 0)  # monotone inside a session


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="horizons"):
        ClassicalConfig(horizons=(0, 2))
    with pytest.raises(ValueError, match="unknown classical rows"):
        fit_classical(["arima"], *ar1_task(0.1, n=600)[:1], (100, 300), env=ENV)
    assert ClassicalConfig(horizons=(8, 2, 2)).horizons == (2, 8)
