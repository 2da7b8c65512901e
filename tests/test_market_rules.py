"""The rules table (metatrade.market.rules) is what the ledger and both envs do."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from market_helpers import make_task_arrays
from metatrade.market import Action, BacktestingEngine, BatchTradingEnv, CostModel, InstrumentSpec
from metatrade.market.actions import Target
from metatrade.market.rules import NEXT_POSITION, ORDER, ORDERS, TARGETS, Order, fee_table

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


@pytest.mark.parametrize("position", [-1, 0, 1])
@pytest.mark.parametrize("target", list(Target))
def test_target_actions_are_the_next_position_with_every_leg_costed(
    target: Target, position: int
) -> None:
    """A target cell is carried out by the ledger as its legs: a reversal closes (exit fee,
    slippage) and opens (entry fee, slippage) at the same quoted price."""
    engine = _engine_in(position)
    cash = engine.cash
    legs = TARGETS.legs[target][position + 1]
    results = [engine.execute_trade(leg, 101.0) for leg in legs]
    assert all(r.accepted for r in results)
    assert engine.position == TARGETS.next_position[target, position + 1] == target - 1
    order = TARGETS.order[target, position + 1]
    assert len(legs) == {Order.HOLD: 0, Order.OPEN: 1, Order.CLOSE: 1, Order.REVERSE: 2}[order]
    assert (order == Order.REVERSE) == (position * (target - 1) < 0)
    paid = sum(r.cost for r in results)
    notional = sum(r.fill_price * r.quantity for r in results)
    assert paid == pytest.approx(fee_table(COSTS, TARGETS)[target, position + 1] + 2e-4 * notional)
    if not legs:
        assert engine.cash == cash


@pytest.mark.parametrize("rules", [ORDERS, TARGETS], ids=["orders", "target"])
def test_toward_reaches_a_target_by_the_rules(rules) -> None:
    """``toward`` (what rule rows trade): orders close first and reverse over two bars,
    target positions get there in one."""
    for target in (-1, 0, 1):
        for position in (-1, 0, 1):
            a = rules.toward[target + 1, position + 1]
            assert rules.order[a, position + 1] != Order.INVALID
            nxt = rules.next_position[a, position + 1]
            two_bars = rules is ORDERS and target * position < 0
            assert nxt == (0 if two_bars else target)
            if target == position:
                assert rules.order[a, position + 1] == Order.HOLD


def test_the_batch_env_fills_target_actions_by_the_same_table() -> None:
    """Every (target, position) pair at once: 3 targets x 3 positions in 9 slots."""
    env = BatchTradingEnv(
        [make_task_arrays(400)], 9, lookback=4, episode_length=50, costs=COSTS, actions="target"
    )
    env.reset(starts=np.full((1, 9), 10))
    positions = np.tile([-1, 0, 1], 3)
    env.step((positions + 1)[None])
    actions = np.repeat(np.arange(3), 3)
    _, _, _, _, info = env.step(actions[None])
    cells = (actions, positions + 1)
    assert not info["invalid_action"].any()
    np.testing.assert_array_equal(info["position"][0], TARGETS.next_position[cells])
    np.testing.assert_array_equal(info["trade_closed"][0], TARGETS.closes[cells])
    paid, fees = info["order_cost"][0], fee_table(COSTS, TARGETS)[cells]
    assert np.all(paid > fees) == np.all(fees > 0) and np.all(paid[fees == 0] == 0.0)
    assert np.all(paid[fees == 60.0] > paid[(fees > 0) & (fees < 60.0)].max())  # both legs
