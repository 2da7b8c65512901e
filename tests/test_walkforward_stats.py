"""PSR / DSR against the paper's worked example and skfolio; the cost break-even of a known
trade list, checked by re-running the ledger at that cost."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metatrade.evaluation.walkforward.stats import (
    breakeven_bps,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    psr_from_moments,
)
from metatrade.market.actions import Action
from metatrade.market.costs import CostModel
from metatrade.market.engine import BacktestingEngine


def test_dsr_matches_the_papers_numerical_example() -> None:
    # Bailey & Lopez de Prado (2014), section "A numerical example": annualised SR 2.5 over
    # T = 1250 daily observations, skew -3, kurtosis 10, N = 100 trials whose annualised
    # Sharpe ratios have variance 0.5 (250 days a year): SR0 = 0.1132, DSR = 0.9004.
    sr0 = expected_max_sharpe(100, math.sqrt(0.5 / 250))
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = psr_from_moments(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_psr_and_dsr_match_skfolio() -> None:
    measures = pytest.importorskip("skfolio.measures")
    rng = np.random.default_rng(3)
    returns = 0.0004 + 0.01 * (rng.standard_t(4, 500) + 0.3 * rng.standard_normal(500) ** 2)
    trials = rng.normal(0.02, 0.03, 12)
    for bench in (0.0, 0.03):
        assert probabilistic_sharpe_ratio(returns, bench) == pytest.approx(
            measures.probabilistic_sharpe_ratio(returns, benchmark_sharpe_ratio=bench), abs=1e-6
        )
    ours = deflated_sharpe_ratio(returns, n_trials=12, trial_sharpe_std=float(trials.std(ddof=1)))
    assert ours == pytest.approx(measures.deflated_sharpe_ratio(returns, trials), abs=1e-6)
    assert 0.0 < ours < probabilistic_sharpe_ratio(returns)  # deflation lowers it


def _ledger_pnl(bps: float) -> tuple[float, float]:
    """Two round trips with fixed quantities: (net P&L, traded notional both sides)."""
    eng = BacktestingEngine(10_000_000.0, CostModel(25.0, 35.0, proportional_bps=bps))
    eng.execute_trade(Action.BUY_LONG, 100.0, 1000)
    eng.execute_trade(Action.CLOSE_LONG, 101.0)
    eng.execute_trade(Action.SELL_SHORT, 200.0, 500)
    eng.execute_trade(Action.CLOSE_SHORT, 198.0)
    notional = sum(t.quantity * (t.entry_price + t.exit_price) for t in eng.trades)
    return sum(t.net_pnl for t in eng.trades), notional


def test_cost_breakeven_of_a_known_trade_list_is_exact() -> None:
    pnl, notional = _ledger_pnl(0.0)
    # gross 1000 + 1000, fees 2 x (25 + 35): net 1880 on 400,000 of notional -> 47 bps/side
    assert pnl == pytest.approx(1880.0) and notional == pytest.approx(400_000.0)
    be = breakeven_bps(pnl, notional, 0.0)
    assert be == pytest.approx(47.0, abs=1e-12)
    assert _ledger_pnl(be)[0] == pytest.approx(0.0, abs=1e-8)  # the ledger agrees
    pnl2, _ = _ledger_pnl(10.0)  # from another cost level, the same break-even
    assert breakeven_bps(pnl2, notional, 10.0) == pytest.approx(47.0, abs=1e-9)
