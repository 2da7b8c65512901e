"""Backtests and the report on small synthetic tasks: hand-computed P&L, stressed costs,
every promised line, numbers equal to compute_metrics', files written."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from metatrade.data.features import build_task_arrays
from metatrade.data.splits import SplitConfig
from metatrade.data.synthetic import (
    RegimeParams,
    generate_bars,
    oracle_positions,
    synthetic_instrument,
)
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.backtest import (
    buy_and_hold,
    fixed_positions,
    flat,
    run_backtest,
    run_backtest_pair,
    target_to_action,
)
from metatrade.evaluation.metrics import compute_metrics
from metatrade.evaluation.report import HEADLINE, backtest_and_report, format_backtest_report
from metatrade.market.actions import Action
from metatrade.market.config import TradingEnvConfig


@pytest.fixture(scope="module")
def task():
    params = RegimeParams(phi=0.3, sigma=1e-3)
    bars = generate_bars(params, 900, 0)
    arrays = build_task_arrays(
        TaskId("Syn000_p030", "5"),
        bars,
        splits=SplitConfig(),
        instrument=synthetic_instrument("Syn000_p030"),
    )
    return arrays, params


@dataclass(frozen=True)
class FixedUnits:
    """A PositionSizer trading a fixed quantity, so that costs do not change sizes."""

    qty: int = 10

    def units(self, equity, fill_price, entry_fee, proportional_rate, lot_size) -> int:
        return self.qty

    def units_array(self, equity, fill_price, entry_fee, proportional_rate, lot_size):
        return np.full(np.shape(equity), float(self.qty))


def test_buy_and_hold_pnl_equals_hand_computation(task) -> None:
    arrays, _ = task
    cfg = TradingEnvConfig(lookback=8)
    r = run_backtest(buy_and_hold(), arrays, split="test", config=cfg)
    lo, hi = arrays.split_range("test")
    first = max(lo, cfg.lookback - 1)
    fill = arrays.open[first + 1]  # decided on the first bar, filled at the next open
    qty = math.floor((cfg.initial_capital - 25.0) / fill)
    expected = qty * (arrays.close[hi - 1] - fill) - 25.0 - 35.0  # liquidated at the last close
    assert r.total_pnl == pytest.approx(expected, rel=1e-12, abs=1e-6)
    assert r.metrics["total_pnl"] == pytest.approx(expected, abs=1e-6)
    assert len(r.trades) == 1 and r.trades.loc[0, "quantity"] == qty
    assert len(r.equity) == len(r.timestamps) == hi - first


def test_flat_is_zero_and_target_to_action_rules() -> None:
    pos = np.array([0, 0, 1, 1, -1, -1])
    tgt = np.array([0, 1, 1, -1, -1, 0])
    expected = [
        Action.HOLD,
        Action.BUY_LONG,
        Action.HOLD,
        Action.CLOSE_LONG,
        Action.HOLD,
        Action.CLOSE_SHORT,
    ]
    np.testing.assert_array_equal(target_to_action(tgt, pos), [int(a) for a in expected])


def test_stressed_costs_never_improve_pnl(task) -> None:
    arrays, params = task
    rng = np.random.default_rng(0)
    cfg = TradingEnvConfig(lookback=8, sizer=FixedUnits(10))
    rules = [
        buy_and_hold(),
        flat(),
        fixed_positions("oracle", oracle_positions(arrays.close, params)),
        fixed_positions("noise", rng.integers(-1, 2, size=len(arrays))),
    ]
    for rule in rules:
        default, stressed = run_backtest_pair(rule, arrays, config=cfg).values()
        n = len(default.trades)
        assert len(stressed.trades) == n
        assert stressed.total_pnl <= default.total_pnl + 1e-9
        if n:  # exactly 2 bps of each side's notional more
            notional = (
                default.trades.quantity * (default.trades.entry_price + default.trades.exit_price)
            ).sum()
            assert default.total_pnl - stressed.total_pnl == pytest.approx(2e-4 * notional)


def test_report_lines_and_numbers_match_compute_metrics(task, tmp_path) -> None:
    arrays, params = task
    rule = fixed_positions("oracle", oracle_positions(arrays.close, params, 2e-4))
    cfg = TradingEnvConfig(lookback=8)
    out = backtest_and_report(rule, arrays, tmp_path, config=cfg)
    report = out["report"]
    assert report.splitlines()[0] == "=== Backtesting Report ==="
    for label, _, _ in HEADLINE:
        assert any(line.startswith(label) for line in report.splitlines()), label
    assert "default costs" in report and "stressed (+2 bps/side)" in report
    default = out["results"]["default costs"]
    ref = compute_metrics(
        default.equity,
        default.trades.to_dict("records"),
        periods_per_year=arrays.bars_per_year,
        positions=default.positions[1:],
        initial_capital=1e6,
    )
    assert default.metrics == pytest.approx(ref, nan_ok=True)
    line = next(x for x in report.splitlines() if x.startswith("Total P&L"))
    assert f"{ref['total_pnl']:,.2f}" == line.split()[2]
    line = next(x for x in report.splitlines() if x.startswith("Number of Trades"))
    assert line.split()[3] == str(int(ref["num_trades"]))
    # Files: report, trades (CSV of the ledger's trades), metrics JSON, equity PNG.
    files = out["files"]
    trades = pd.read_csv(files["trades"])
    assert len(trades) == ref["num_trades"]
    assert trades.net_pnl.sum() == pytest.approx(default.total_pnl, abs=1e-4)
    assert (
        json.loads((tmp_path / "metrics.json").read_text())["default costs"]["num_trades"]
        == ref["num_trades"]
    )
    png = (tmp_path / "equity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_refuses_missing_headline_metric() -> None:
    with pytest.raises(KeyError, match="sharpe"):
        format_backtest_report({"default costs": {"total_pnl": 1.0}})
