"""The rules table (metatrade.market.rules) is what the ledger and both envs do."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from market_helpers import make_task_arrays
from metatrade.market import Action, BacktestingEngine, BatchTradingEnv, CostModel, InstrumentSpec
from metatrade.market.rules import NEXT_POSITION, ORDER, Order, fee_table

COSTS = CostModel(entry_fee=25.0, exit_fee=35.0, proportional_bps=2.0, slippage_bps=1.0)
OPENING = {1: Action.BUY_LONG, -1: Action.SELL_SHORT}


def _engine_in(position: int) -> BacktestingEngine:
    engine = BacktestingEngine(1_000_000.0, COSTS, InstrumentSpec("x", 5))
    if position:
        assert engine.execute_trade(OPENING[position], 100.0).accepted
    return engine


@pytest.mark.parametrize("position", [-1, 0, 1])
@pytest.mark.parametrize("action", list(Action))
def test_the_engine_does_what_the_table_says(action: Action, position: int) -> None:
    engine = _engine_in(position)
    cash = engine.cash
    result = engine.execute_trade(action, 101.0)
    order = ORDER[action, position + 1]
    assert result.accepted == (order != Order.INVALID)
    assert engine.position == NEXT_POSITION[action, position + 1]
    fee = fee_table(COSTS)[action, position + 1]
    if order in (Order.HOLD, Order.INVALID):
        assert (result.cost, engine.cash) == (0.0, cash)
        return
    # fee + 2 bps of the notional, and the fill 1 bp against the trader
    assert result.cost == pytest.approx(fee + 2e-4 * result.fill_price * result.quantity)
    buys = action == Action.BUY_LONG or action == Action.CLOSE_SHORT
    assert result.fill_price == pytest.approx(101.0 * (1.0 + 1e-4 if buys else 1.0 - 1e-4))


def test_the_batch_env_rejects_and_fills_by_the_same_table() -> None:
    """Every (action, position) pair at once: 5 actions x 3 positions in 15 slots."""
    env = BatchTradingEnv([make_task_arrays(400)], 15, lookback=4, episode_length=50, costs=COSTS)
    env.reset(starts=np.full((1, 15), 10))
    positions = np.tile([-1, 0, 1], 5)
    entry = np.array([{-1: 1, 0: 4, 1: 0}[int(p)] for p in positions])  # SELL_SHORT/HOLD/BUY
    assert np.array_equal(env.step(entry[None])[4]["position"][0], positions)
    actions = np.repeat(np.arange(5), 3)
    _, _, _, _, info = env.step(actions[None])
    cells = (actions, positions + 1)
    np.testing.assert_array_equal(info["invalid_action"][0], ORDER[cells] == Order.INVALID)
    np.testing.assert_array_equal(info["position"][0], NEXT_POSITION[cells])
    paid = info["order_cost"][0]
    fees = fee_table(COSTS)[cells]
    assert np.all((paid > fees) == (fees > 0)) and np.all(paid[fees == 0] == 0.0)


def test_the_rules_import_without_torch() -> None:
    code = "import sys, metatrade.market.rules; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
