"""Metrics: cross-checked against empyrical-reloaded, hand-worked trade stats, edge cases."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pytest

from metatrade.data.calendar import bars_per_year as calendar_bars_per_year
from metatrade.evaluation.metrics import compute_metrics, drawdown_series
from metatrade.market import Action, BacktestingEngine


def bars_per_year(bar_minutes: int) -> float:
    """The NSE's annualisation: 252 sessions of 375 minutes (metatrade.data.calendar)."""
    return calendar_bars_per_year(str(bar_minutes), session_minutes=375, sessions_per_year=252)


NSE_5MIN = bars_per_year(5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bar_minutes", [5, 45, 240])
def test_matches_empyrical(seed: int, bar_minutes: int) -> None:
    rng = np.random.default_rng(seed)
    returns = rng.normal(2e-4, 3e-3, 500)
    equity = 1_000_000.0 * np.concatenate([[1.0], np.cumprod(1.0 + returns)])
    ppy = bars_per_year(bar_minutes)
    m = compute_metrics(equity, [], periods_per_year=ppy)
    assert m["bars_per_year"] == ppy
    assert m["sharpe"] == pytest.approx(
        empyrical.sharpe_ratio(returns, annualization=ppy), rel=1e-9
    )
    assert m["sortino"] == pytest.approx(
        empyrical.sortino_ratio(returns, annualization=ppy), rel=1e-9
    )
    assert m["max_drawdown"] == pytest.approx(-empyrical.max_drawdown(returns), rel=1e-9)
    assert m["annual_return"] == pytest.approx(
        empyrical.annual_return(returns, annualization=ppy), rel=1e-9
    )
    assert m["calmar"] == pytest.approx(
        empyrical.calmar_ratio(returns, annualization=ppy), rel=1e-9
    )
    rf = 0.065
    m = compute_metrics(equity, [], periods_per_year=ppy, risk_free_rate=rf)
    assert m["sharpe"] == pytest.approx(
        empyrical.sharpe_ratio(returns, risk_free=rf / ppy, annualization=ppy), rel=1e-9
    )


def test_annualisation_convention() -> None:
    # NSE, 375-minute session: 75 five-minute bars, 9 bars of 45 min (last one short), 2 of 240.
    assert bars_per_year(5) == 252 * 75
    assert bars_per_year(45) == 252 * 9
    assert bars_per_year(240) == 252 * 2
    assert bars_per_year(1) == 252 * 375


def test_trade_statistics_by_hand() -> None:
    trades = [
        {"net_pnl": 100.0, "quantity": 2, "entry_price": 50.0, "exit_price": 100.0, "bars_held": 3},
        {"net_pnl": -50.0, "quantity": 1, "entry_price": 100.0, "exit_price": 50.0, "bars_held": 1},
        {"net_pnl": 30.0, "quantity": 1, "entry_price": 10.0, "exit_price": 40.0, "bars_held": 2},
    ]
    equity = [
        1000.0,
        1100.0,
        1050.0,
        1080.0,
        1080.0,
        1080.0,
        1080.0,
        1080.0,
        1080.0,
        1080.0,
        1080.0,
    ]
    m = compute_metrics(equity, trades, periods_per_year=NSE_5MIN)
    assert m["num_trades"] == 3 and m["total_pnl"] == 80.0
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert m["profit_factor"] == pytest.approx(130.0 / 50.0)
    assert m["avg_trade_pnl"] == pytest.approx(80.0 / 3)
    assert m["max_drawdown_abs"] == 50.0 and m["max_drawdown"] == pytest.approx(50.0 / 1100.0)
    assert m["exposure"] == pytest.approx(6 / 10)  # bars held / bar returns
    assert m["turnover"] == pytest.approx((300.0 + 150.0 + 50.0) / np.mean(equity))
    assert compute_metrics(
        equity, trades, periods_per_year=NSE_5MIN, positions=[1, 1, 0, 0, -1] + [0] * 5
    )["exposure"] == pytest.approx(0.3)


def test_engine_trades_feed_metrics() -> None:
    eng = BacktestingEngine(100_000.0)
    eng.mark(1000.0)
    eng.execute_trade(Action.BUY_LONG, 1000.0)
    eng.mark(1010.0)
    eng.execute_trade(Action.CLOSE_LONG, 1020.0)
    eng.mark(1020.0)
    m = compute_metrics(eng.equity_curve, eng.trades, periods_per_year=NSE_5MIN)
    assert m["num_trades"] == 1 and m["total_pnl"] == pytest.approx(1920.0)
    assert m["win_rate"] == 1.0 and math.isnan(m["profit_factor"])  # no losing trade


def _finite_or_nan(m: dict[str, float]) -> bool:
    return not any(math.isinf(v) for v in m.values())


def test_edge_cases_documented_values() -> None:
    flat = compute_metrics([1e6] * 50, [], periods_per_year=NSE_5MIN)
    assert flat["sharpe"] == 0.0 and flat["sortino"] == 0.0 and flat["max_drawdown"] == 0.0
    assert math.isnan(flat["win_rate"]) and math.isnan(flat["profit_factor"])
    assert math.isnan(flat["calmar"]) and flat["num_trades"] == 0 and flat["exposure"] == 0.0
    rising = compute_metrics(1e6 * 1.001 ** np.arange(20), [], periods_per_year=NSE_5MIN)
    assert math.isnan(rising["sortino"]) and math.isnan(rising["calmar"])
    single = compute_metrics([1e6], [], periods_per_year=NSE_5MIN)
    assert math.isnan(single["sharpe"]) and single["total_pnl"] == 0.0
    ruined = compute_metrics([1e6, 5e5, 0.0, -1e4], [], periods_per_year=NSE_5MIN)
    assert math.isnan(ruined["sharpe"]) and ruined["max_drawdown"] == pytest.approx(1.01)
    for m in (flat, rising, single, ruined):
        assert _finite_or_nan(m)
    with pytest.raises(ValueError, match="equity_curve"):
        compute_metrics([], [], periods_per_year=NSE_5MIN)
    with pytest.raises(ValueError, match=r"equity_curve\[1\]"):
        compute_metrics([1.0, float("inf")], [], periods_per_year=NSE_5MIN)
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_metrics([1.0, 2.0], [], periods_per_year=0)


def test_drawdown_series_hand_worked() -> None:
    # the series the equity plot draws and the maxima the metrics report are one computation
    dd_pct, dd_abs = drawdown_series(np.array([100.0, 120.0, 90.0, 130.0, 117.0]))
    np.testing.assert_allclose(dd_pct, [0.0, 0.0, 0.25, 0.0, 0.1])
    np.testing.assert_allclose(dd_abs, [0.0, 0.0, 30.0, 0.0, 13.0])
    m = compute_metrics(np.array([100.0, 120.0, 90.0, 130.0, 117.0]), [], periods_per_year=NSE_5MIN)
    assert m["max_drawdown"] == pytest.approx(0.25)
    assert m["max_drawdown_abs"] == pytest.approx(30.0)


def test_annual_return_overflow_is_nan_not_inf() -> None:
    # +60 % in 3 five-minute bars compounds to 1.6 ** 6300: past float range
    m = compute_metrics(np.array([1e6, 1.2e6, 1.1e6, 1.6e6]), [], periods_per_year=NSE_5MIN)
    assert math.isnan(m["annual_return"])
    assert math.isnan(m["calmar"])
    assert m["total_return"] == pytest.approx(0.6)
