"""The ledger: one position at a time, fixed plus proportional costs, slippage, trade history.

Accounting convention (the identity the tests pin):

* ``cash`` = initial capital + realised P&L of closed trades - entry cost of the open position;
* ``unrealised_pnl`` = side * qty * (mark - entry_price) - entry cost of the open position
  (what closing at the mark would earn before the exit order's own cost);
* ``equity`` = cash + side * qty * (mark - entry_price)
            = initial capital + realised P&L + unrealised P&L.

Every order's cost is paid in cash once, when the order fills, and is attributed once to
its trade (``Trade.entry_cost`` / ``Trade.exit_cost``; ``net_pnl`` subtracts both).

Invalid orders are rejected, never executed: closing with nothing open (or closing the
side not held), opening while any position is open (same side *or* the opposite side: to
reverse, close first and open on a later order), an entry quantity that is not a positive
multiple of the lot size, and an entry that cannot afford one lot. The rules (validity,
fills, costs) are :mod:`metatrade.market.rules`, shared with both environments. A rejection comes back
as ``TradeResult(accepted=False, reason=...)``; the ledger is unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from metatrade.market import rules
from metatrade.market.actions import Action
from metatrade.market.costs import CostModel, InstrumentSpec
from metatrade.market.rules import ORDER_ROWS, Order
from metatrade.market.sizing import FixedFractionSizer, PositionSizer

_HOLD = int(Action.HOLD)
_CLOSE_LONG = int(Action.CLOSE_LONG)
_CLOSE_SHORT = int(Action.CLOSE_SHORT)


@dataclass(frozen=True, slots=True)
class Trade:
    """One closed round trip. Prices are fill prices (after slippage); money in the
    instrument's currency."""

    side: int  # +1 long, -1 short
    quantity: int
    entry_time: Any
    entry_price: float
    exit_time: Any
    exit_price: float
    entry_cost: float
    exit_cost: float
    gross_pnl: float  # side * qty * (exit - entry)
    net_pnl: float  # gross - entry_cost - exit_cost
    bars_held: int  # bar closes marked while the position was open

    @property
    def costs(self) -> float:
        return self.entry_cost + self.exit_cost

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TradeResult:
    """What ``execute_trade`` did. ``accepted=False`` means nothing changed (see ``reason``)."""

    accepted: bool
    action: int  # an Action value
    reason: str = ""
    fill_price: float = 0.0
    quantity: int = 0
    cost: float = 0.0
    trade: Trade | None = None  # the round trip this order closed, if any


class BacktestingEngine:
    """Scalar ledger for one instrument; see the module docstring for the accounting.

    Args:
        initial_capital: starting cash, in the instrument's currency.
        costs: brokerage, proportional and side-only charges, slippage (``CostModel``).
        spec: lot size of the instrument (``InstrumentSpec``; a dated one by entry time).
        sizer: entry size when ``execute_trade`` gets no quantity
            (default: ``FixedFractionSizer(1.0)``, all equity in whole lots).
    """

    def __init__(
        self,
        initial_capital: float = 1_000_000.0,
        costs: CostModel | None = None,
        spec: InstrumentSpec | None = None,
        sizer: PositionSizer | None = None,
    ) -> None:
        if not initial_capital > 0:
            raise ValueError(f"initial_capital={initial_capital!r}: use a positive amount")
        self.initial_capital = float(initial_capital)
        self.costs = costs if costs is not None else CostModel()
        self.spec = spec if spec is not None else InstrumentSpec()
        self.sizer = sizer if sizer is not None else FixedFractionSizer()
        self._entry_fee = float(self.costs.entry_fee)
        self._exit_fee = float(self.costs.exit_fee)
        self._prop = self.costs.proportional_rate
        self._slip = self.costs.slippage_rate
        self._buy, self._sell = self.costs.buy_rate, self.costs.sell_rate
        self._lot = int(self.spec.lot_size)
        self.reset()

    # ---------------------------------------------------------------- state
    def reset(self) -> None:
        """Back to initial capital, flat, empty history."""
        self.cash = self.initial_capital
        self.position = 0  # -1 short, 0 flat, +1 long
        self.quantity = 0
        self.entry_price = 0.0
        self.entry_cost = 0.0
        self.entry_time: Any = None
        self.bars_held = 0
        self.last_price = 0.0
        self.realised_pnl = 0.0
        self.total_costs = 0.0
        self.trades: list[Trade] = []
        self.equity_curve: list[float] = []
        self.equity_times: list[Any] = []
        self.rejections = 0

    @property
    def unrealised_pnl(self) -> float:
        """Net of the open position's entry cost; 0 when flat."""
        if self.position == 0:
            return 0.0
        return self._marked_pnl() - self.entry_cost

    @property
    def equity(self) -> float:
        """Cash plus the open position marked at ``last_price``."""
        if self.position == 0:
            return self.cash
        return self.cash + self._marked_pnl()

    def _marked_pnl(self) -> float:
        return rules.position_pnl(
            side=self.position,
            quantity=self.quantity,
            price=self.last_price,
            entry_price=self.entry_price,
        )

    @property
    def bankrupt(self) -> bool:
        """True when equity is at or below zero (the flag for negative capital)."""
        return self.equity <= 0.0

    def get_account_state(self) -> dict[str, Any]:
        """A snapshot of the account (plain Python values)."""
        return {
            "cash": self.cash,
            "equity": self.equity,
            "position": self.position,
            "quantity": self.quantity,
            "entry_price": self.entry_price,
            "entry_cost": self.entry_cost,
            "last_price": self.last_price,
            "bars_held": self.bars_held,
            "realised_pnl": self.realised_pnl,
            "unrealised_pnl": self.unrealised_pnl,
            "total_costs": self.total_costs,
            "num_trades": len(self.trades),
            "rejections": self.rejections,
            "bankrupt": self.bankrupt,
        }

    # ---------------------------------------------------------------- orders
    def mark(self, price: float, timestamp: Any = None) -> float:
        """Close of a bar: mark the position at ``price``, count a bar held, record equity."""
        self.last_price = price
        if self.position != 0:
            self.bars_held += 1
        equity = self.equity
        self.equity_curve.append(equity)
        self.equity_times.append(timestamp)
        return equity

    def liquidate(self) -> float:
        """Close any open position at the last mark (its price and time), paying the exit
        order's costs, and record the flat account as that mark's equity. What every ledger
        does to a position still open when trading stops (the end of a backtest, a protocol
        episode or a walk-forward fold, ruin), so every cost is paid and every trade listed.
        Returns the equity (the cash, once flat)."""
        if self.position != 0:
            close = _CLOSE_LONG if self.position > 0 else _CLOSE_SHORT
            when = self.equity_times[-1] if self.equity_times else None
            self.execute_trade(close, self.last_price, None, when)
            if self.equity_curve:
                self.equity_curve[-1] = self.equity
        return self.equity

    def _reject(self, action: int, reason: str) -> TradeResult:
        self.rejections += 1
        return TradeResult(False, action, reason)

    def execute_trade(
        self, action: int, price: float, quantity: int | None = None, timestamp: Any = None
    ) -> TradeResult:
        """Fill ``action`` at quoted ``price`` (slippage and costs applied here).

        ``quantity`` (units) applies to entries only; ``None`` asks the sizer. Closes
        always close the whole position. HOLD is accepted and does nothing.
        """
        a = int(action)
        if a == _HOLD:
            return TradeResult(True, a)
        if not 0 <= a < _HOLD:
            raise ValueError(
                f"action {action!r}: use one of {[f'{x.value} {x.name}' for x in Action]}"
            )
        if not price > 0.0:
            return self._reject(a, f"price {price!r} is not a positive number")
        order = ORDER_ROWS[a][self.position + 1]
        if order == Order.OPEN:
            return self._open(a, int(rules.ENTRY_SIDE[a]), price, quantity, timestamp)
        if order == Order.CLOSE:
            return self._close(a, self.position, price, timestamp)
        held = {1: "long", -1: "short", 0: "flat"}[self.position]
        if rules.ENTRY_SIDE[a]:
            return self._reject(a, f"already {held} {self.quantity}: close it first")
        return self._reject(a, f"cannot {Action(a).name}: position is {held}")

    def _open(
        self, action: int, side: int, price: float, quantity: int | None, timestamp: Any
    ) -> TradeResult:
        fill = rules.entry_fill(price, side, self._slip)
        equity = self.cash
        side_rate = self._buy if side > 0 else self._sell  # rules.order_side_rate, scalar
        lot = self._lot_at(timestamp)
        terms = {  # of this order's cost: rules.order_cost and rules.entry_outlay
            "fee": self._entry_fee,
            "fill": fill,
            "proportional_rate": self._prop,
            "side_rate": side_rate,
        }
        if quantity is None:
            rate = self._prop + side_rate
            qty = self.sizer.units(equity, fill, self._entry_fee, rate, lot)
            if qty < lot:
                return self._reject(
                    action,
                    f"equity {equity:.2f} cannot afford one lot of {lot} at {fill:.2f}",
                )
        else:
            qty = int(quantity)
            if qty != quantity or qty < lot or qty % lot:
                return self._reject(
                    action, f"quantity {quantity!r} is not a positive multiple of lot {lot}"
                )
            if rules.entry_outlay(quantity=qty, **terms) > equity:
                return self._reject(
                    action, f"equity {equity:.2f} cannot afford {qty} units at {fill:.2f}"
                )
        cost = rules.order_cost(quantity=qty, **terms)
        self.cash = self.cash - cost
        self.total_costs += cost
        self.position = side
        self.quantity = qty
        self.entry_price = fill
        self.entry_cost = cost
        self.entry_time = timestamp
        self.bars_held = 0
        self.last_price = fill
        return TradeResult(True, action, "", fill, qty, cost)

    def _lot_at(self, timestamp: Any) -> int:
        """The lot in force at ``timestamp`` (int ns UTC) when the exchange revised it."""
        if not self.spec.lot_changes or timestamp is None:
            return self._lot
        return int(self.spec.lot_at(int(timestamp)))

    def _close(self, action: int, side: int, price: float, timestamp: Any) -> TradeResult:
        qty = self.quantity
        fill, gross, cost, net = rules.close_position(
            price,
            side=side,
            quantity=qty,
            entry_price=self.entry_price,
            entry_cost=self.entry_cost,
            exit_fee=self._exit_fee,
            proportional_rate=self._prop,
            slippage_rate=self._slip,
            side_rate=self._sell if side > 0 else self._buy,  # closing a long sells
        )
        self.cash = self.cash + gross - cost
        self.total_costs += cost
        self.realised_pnl += net
        trade = Trade(
            side=side,
            quantity=qty,
            entry_time=self.entry_time,
            entry_price=self.entry_price,
            exit_time=timestamp,
            exit_price=fill,
            entry_cost=self.entry_cost,
            exit_cost=cost,
            gross_pnl=gross,
            net_pnl=net,
            bars_held=self.bars_held,
        )
        self.trades.append(trade)
        self.position = 0
        self.quantity = 0
        self.entry_price = 0.0
        self.entry_cost = 0.0
        self.entry_time = None
        self.bars_held = 0
        self.last_price = fill
        return TradeResult(True, action, "", fill, qty, cost, trade)
