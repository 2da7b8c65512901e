"""The ledger's rules in one place: which order is valid in which position, where the
position goes, and what each order pays.

``BacktestingEngine`` (scalar), ``TradingEnv`` (scalar) and ``BatchTradingEnv`` (numpy, every
slot at once) all read these tables and call these functions, so the three implement one
MDP and the batch env stays bit-identical to the single one. An exact expected-P&L
objective can read the same tables: numpy only, no torch. The functions are plain
arithmetic, so they take Python floats, numpy arrays or torch tensors alike; their
operations and their order are part of the contract (changing them changes every
trajectory's last bits).

Positions are -1 short, 0 flat, +1 long; a table's column is ``position + 1``.

| action \\ position | short (-1)   | flat (0)        | long (+1)    |
| ------------------ | ------------ | --------------- | ------------ |
| BUY_LONG           | INVALID      | OPEN -> long    | INVALID      |
| SELL_SHORT         | INVALID      | OPEN -> short   | INVALID      |
| CLOSE_LONG         | INVALID      | INVALID         | CLOSE -> flat|
| CLOSE_SHORT        | CLOSE -> flat| INVALID         | INVALID      |
| HOLD               | HOLD         | HOLD            | HOLD         |

An OPEN also needs the money for one lot (else it is rejected like an INVALID order); an
INVALID order changes nothing. Who pays what: an OPEN pays
``entry_fee + (proportional_rate + side_rate) * fill * quantity`` and fills at
``price * (1 + side * slippage_rate)``; a CLOSE pays
``exit_fee + (proportional_rate + side_rate) * fill * quantity`` and fills at
``price * (1 - side * slippage_rate)`` (slippage always against the trader). HOLD pays
nothing. ``side_rate`` is the order's side-only charge (``order_side_rate``: stamp duty on a
buy, securities transaction tax on a sell): a long entry and a short's exit are buys, a
short entry and a long's exit are sells. It defaults to 0.0, which leaves every other
term's arithmetic bit for bit as it was.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import numpy as np

from metatrade.market.actions import NUM_ACTIONS, Action
from metatrade.market.costs import CostModel

POSITIONS = np.array([-1, 0, 1], dtype=np.int64)
"""the positions, in table-column order (column = position + 1)"""


class Order(IntEnum):
    """What an action does in a position (the cells of ``ORDER``)."""

    HOLD = 0  # nothing happens, nothing is paid
    OPEN = 1  # an entry on the action's ENTRY_SIDE; pays the entry cost
    CLOSE = 2  # an exit of the whole position; pays the exit cost
    INVALID = 3  # rejected: the ledger is unchanged (the envs treat it as HOLD)


ENTRY_SIDE = np.array([1, -1, 0, 0, 0], dtype=np.int64)
"""[action] the position an entry opens: BUY_LONG +1, SELL_SHORT -1, others 0"""
EXIT_SIDE = np.array([0, 0, 1, -1, 0], dtype=np.int64)
"""[action] the position a close closes: CLOSE_LONG +1, CLOSE_SHORT -1, others 0"""


def _order(action: int, position: int) -> Order:
    if action == Action.HOLD:
        return Order.HOLD
    if ENTRY_SIDE[action] != 0:
        return Order.OPEN if position == 0 else Order.INVALID
    return Order.CLOSE if position == EXIT_SIDE[action] else Order.INVALID


ORDER = np.array(
    [[_order(a, int(p)) for p in POSITIONS] for a in range(NUM_ACTIONS)], dtype=np.int64
)
"""[action, position + 1] the Order an action makes in a position (the table above)"""
ORDER_ROWS: tuple[tuple[int, ...], ...] = tuple(tuple(int(k) for k in row) for row in ORDER)
"""``ORDER`` as nested tuples: the scalar ledger's lookup (cheaper than numpy indexing)"""
NEXT_POSITION = np.where(
    ORDER == Order.OPEN,
    ENTRY_SIDE[:, None],
    np.where(ORDER == Order.CLOSE, 0, POSITIONS[None, :]),
)
"""[action, position + 1] the position after the order fills (INVALID and HOLD: unchanged;
an OPEN that cannot afford one lot is rejected and leaves the position flat)"""


def fee_table(costs: CostModel) -> np.ndarray:
    """[action, position + 1] the fixed fee an order pays (entry fee on OPEN, exit fee on CLOSE),
    for objectives that sum costs over the position's transitions."""
    return np.where(
        ORDER == Order.OPEN,
        float(costs.entry_fee),
        np.where(ORDER == Order.CLOSE, float(costs.exit_fee), 0.0),
    )


def entry_fill(price: Any, side: Any, slippage_rate: Any) -> Any:
    """Fill price of an entry on ``side``: slippage moves it against the trader."""
    return price * (1.0 + side * slippage_rate)


def exit_fill(price: Any, side: Any, slippage_rate: Any) -> Any:
    """Fill price of closing a ``side`` position: slippage moves it against the trader."""
    return price * (1.0 - side * slippage_rate)


def order_side_rate(order_side: Any, *, buy_rate: Any, sell_rate: Any) -> Any:
    """The side-only proportional rate of an order: ``buy_rate`` on a buy (``order_side``
    +1: a long entry, a short's exit), ``sell_rate`` on a sell (-1), 0 for no order."""
    return buy_rate * (order_side > 0) + sell_rate * (order_side < 0)


def order_cost(
    *, fee: Any, fill: Any, quantity: Any, proportional_rate: Any, side_rate: Any = 0.0
) -> Any:
    """What one order pays: its fixed fee plus the proportional cost of its notional, at the
    rate of every order plus the order side's own (``order_side_rate``)."""
    return fee + fill * quantity * (proportional_rate + side_rate)


def entry_outlay(
    *, fee: Any, fill: Any, quantity: Any, proportional_rate: Any, side_rate: Any = 0.0
) -> Any:
    """Cash an entry of ``quantity`` needs: notional plus its cost (must not exceed equity)."""
    return fill * quantity * (1.0 + (proportional_rate + side_rate)) + fee


def position_pnl(*, side: Any, quantity: Any, price: Any, entry_price: Any) -> Any:
    """P&L of a position marked (or closed) at ``price``, before any cost."""
    return side * quantity * (price - entry_price)


def close_position(
    price: Any,
    *,
    side: Any,
    quantity: Any,
    entry_price: Any,
    entry_cost: Any,
    exit_fee: Any,
    proportional_rate: Any,
    slippage_rate: Any,
    side_rate: Any = 0.0,
) -> tuple[Any, Any, Any, Any]:
    """Close a ``side`` position at quoted ``price``: (fill, gross P&L, exit cost, net P&L),
    where net = gross - entry cost - exit cost (each cost attributed once to its trade);
    ``side_rate``: the exit order's side-only rate (a sell for a long, a buy for a short)."""
    fill = exit_fill(price, side, slippage_rate)
    gross = position_pnl(side=side, quantity=quantity, price=fill, entry_price=entry_price)
    cost = order_cost(
        fee=exit_fee,
        fill=fill,
        quantity=quantity,
        proportional_rate=proportional_rate,
        side_rate=side_rate,
    )
    return fill, gross, cost, gross - entry_cost - cost
