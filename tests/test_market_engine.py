"""BacktestingEngine: a hand-worked ledger, rejections, and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metatrade.market import (
    Action,
    BacktestingEngine,
    CostModel,
    FixedFractionSizer,
    InstrumentSpec,
)


def test_hand_computed_long_then_short() -> None:
    eng = BacktestingEngine(100_000.0)  # 25 INR in, 35 INR out, lot 1, all equity
    r = eng.execute_trade(Action.BUY_LONG, 1000.0, timestamp=1)
    # floor((100_000 - 25) / 1000) = 99 units; cash pays only the 25 INR fee.
    assert (r.accepted, r.quantity, r.fill_price, r.cost) == (True, 99, 1000.0, 25.0)
    assert eng.cash == 99_975.0
    assert eng.mark(1010.0) == pytest.approx(99_975.0 + 99 * 10.0)  # 100_965
    assert eng.unrealised_pnl == pytest.approx(990.0 - 25.0)

    r = eng.execute_trade(Action.CLOSE_LONG, 1020.0, timestamp=2)
    t = r.trade
    assert t is not None and (t.side, t.quantity, t.entry_time, t.exit_time) == (1, 99, 1, 2)
    assert (t.gross_pnl, t.entry_cost, t.exit_cost) == (1980.0, 25.0, 35.0)
    assert t.net_pnl == pytest.approx(1920.0)
    assert eng.cash == pytest.approx(101_920.0) and eng.position == 0

    r = eng.execute_trade(Action.SELL_SHORT, 1019.2)
    assert r.quantity == 99  # floor(101_895 / 1019.2) = 99
    assert eng.mark(1000.0) == pytest.approx(101_895.0 + 99 * 19.2)
    r = eng.execute_trade(Action.CLOSE_SHORT, 1030.0)
    assert r.trade.gross_pnl == pytest.approx(-99 * 10.8)
    assert r.trade.net_pnl == pytest.approx(-1069.2 - 60.0)
    assert eng.realised_pnl == pytest.approx(1920.0 - 1129.2)
    assert eng.cash == pytest.approx(100_790.8)
    assert eng.equity == pytest.approx(100_790.8)
    assert eng.total_costs == 120.0
    assert len(eng.trades) == 2


def test_hand_computed_lots_bps_and_slippage() -> None:
    costs = CostModel(entry_fee=20.0, exit_fee=20.0, proportional_bps=10.0, slippage_bps=5.0)
    eng = BacktestingEngine(1_000_000.0, costs, InstrumentSpec("NIFTY", lot_size=25))
    r = eng.execute_trade(Action.BUY_LONG, 20_000.0)
    # fill 20_000 * 1.0005 = 20_010; (1e6 - 20) / (20_010 * 1.001) = 49.9 units -> 1 lot of 25
    assert r.fill_price == pytest.approx(20_010.0) and r.quantity == 25
    assert r.cost == pytest.approx(20.0 + 20_010.0 * 25 * 0.001)  # 520.25
    r = eng.execute_trade(Action.CLOSE_LONG, 20_100.0)
    assert r.fill_price == pytest.approx(20_089.95)  # sells fill 5 bps lower
    assert r.cost == pytest.approx(20.0 + 20_089.95 * 25 * 0.001)  # 522.24875
    assert r.trade.net_pnl == pytest.approx(25 * 79.95 - 520.25 - 522.24875)
    assert eng.equity == pytest.approx(1_000_000.0 + 956.25125)


def test_liquidate_closes_at_the_last_mark_and_records_the_flat_account() -> None:
    """The one end-of-run rule of every ledger: a short open at the last mark is closed at
    that mark's price and time, the exit paid, and the mark's equity becomes the cash."""
    eng = BacktestingEngine(100_000.0)  # 25 INR in, 35 INR out
    eng.execute_trade(Action.SELL_SHORT, 1000.0, timestamp=1)  # 99 units
    eng.mark(990.0, timestamp=2)
    assert eng.equity_curve[-1] == pytest.approx(99_975.0 + 99 * 10.0)
    assert eng.liquidate() == pytest.approx(99_975.0 + 990.0 - 35.0)
    t = eng.trades[-1]
    assert (t.side, t.exit_price, t.exit_time, t.exit_cost) == (-1, 990.0, 2, 35.0)
    assert eng.position == 0 and eng.equity_curve == [eng.cash] and eng.equity_times == [2]
    assert eng.liquidate() == eng.cash and len(eng.trades) == 1  # flat: nothing to do


def test_invalid_orders_are_rejected_and_change_nothing() -> None:
    eng = BacktestingEngine(10_000.0, sizer=FixedFractionSizer(0.5))
    assert not eng.execute_trade(Action.CLOSE_LONG, 100.0).accepted
    assert not eng.execute_trade(Action.CLOSE_SHORT, 100.0).accepted
    assert not eng.execute_trade(Action.BUY_LONG, 20_000.0).accepted  # cannot afford 1 unit
    assert not eng.execute_trade(Action.BUY_LONG, 100.0, quantity=1000).accepted
    assert eng.execute_trade(Action.BUY_LONG, 100.0).quantity == 49  # (5000 - 25) / 100
    before = eng.get_account_state()
    for action in (Action.BUY_LONG, Action.SELL_SHORT, Action.CLOSE_SHORT):
        res = eng.execute_trade(action, 101.0)
        assert not res.accepted and res.reason
    after = eng.get_account_state()
    assert after.pop("rejections") == before.pop("rejections") + 3
    assert after == before
    lots = BacktestingEngine(1e6, spec=InstrumentSpec(lot_size=50))
    assert not lots.execute_trade(Action.BUY_LONG, 100.0, quantity=60).accepted
    assert lots.execute_trade(Action.BUY_LONG, 100.0, quantity=100).accepted
    with pytest.raises(ValueError, match="action 7"):
        eng.execute_trade(7, 100.0)


def test_reset_restores_initial_state() -> None:
    eng = BacktestingEngine(50_000.0)
    eng.execute_trade(Action.BUY_LONG, 10.0)
    eng.mark(11.0)
    eng.reset()
    state = eng.get_account_state()
    assert state["equity"] == 50_000.0 and state["position"] == 0 and state["num_trades"] == 0
    assert eng.equity_curve == [] and eng.trades == []


orders = st.lists(
    st.tuples(
        st.sampled_from(list(Action)),
        st.floats(1.0, 50_000.0, allow_nan=False),
        st.floats(0.2, 5.0),  # next mark relative to the fill price
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    orders,
    st.floats(0.0, 50.0),
    st.floats(0.0, 20.0),
    st.integers(1, 5),
    st.floats(0.1, 1.0),
)
def test_ledger_properties(seq, bps: float, slip: float, lot: int, fraction: float) -> None:
    costs = CostModel(25.0, 35.0, proportional_bps=bps, slippage_bps=slip)
    eng = BacktestingEngine(
        1_000_000.0, costs, InstrumentSpec(lot_size=lot), FixedFractionSizer(fraction)
    )
    paid = 0.0
    for action, price, move in seq:
        state = eng.get_account_state()
        res = eng.execute_trade(action, price)
        if res.accepted and action != Action.HOLD:
            paid += res.cost
            # the order's cost left cash exactly once
            gross = res.trade.gross_pnl if res.trade is not None else 0.0
            assert eng.cash == pytest.approx(state["cash"] + gross - res.cost, rel=1e-12)
            assert res.quantity % lot == 0 and res.quantity >= lot
        elif not res.accepted:
            state["rejections"] += 1
            assert eng.get_account_state() == state  # rejected: nothing changed
        if action in (Action.CLOSE_LONG, Action.CLOSE_SHORT) and res.accepted:
            assert eng.position == 0 and eng.quantity == 0 and eng.unrealised_pnl == 0.0
        eng.mark(price * move)
        equity = eng.equity
        # ledger identity
        assert equity == pytest.approx(
            eng.initial_capital + eng.realised_pnl + eng.unrealised_pnl, rel=1e-9, abs=1e-6
        )
        # each cost counted once: paid = costs inside closed trades + the open entry cost
        booked = sum(t.entry_cost + t.exit_cost for t in eng.trades) + eng.entry_cost
        assert paid == pytest.approx(eng.total_costs, rel=1e-12, abs=1e-9)
        assert booked == pytest.approx(paid, rel=1e-12, abs=1e-9)
        # capital never negative unflagged
        assert eng.bankrupt == (equity <= 0.0)
        if eng.position == 0 and eng.cash < 0.0:
            assert eng.get_account_state()["bankrupt"]
    net = sum(t.net_pnl for t in eng.trades)
    assert eng.realised_pnl == pytest.approx(net, rel=1e-9, abs=1e-6)
