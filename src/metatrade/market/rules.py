"""The ledger's rules in one place: which order is valid in which position, where the
position goes, and what each order pays, for each action space.

``BacktestingEngine`` (scalar), ``TradingEnv`` (scalar), ``BatchTradingEnv`` (numpy, every
slot at once) and the exact expected-P&L objective (``metatrade.exact``, torch) all read these
tables and call these functions, so they implement one MDP: the batch env stays
bit-identical to the single one and the exact objective equals the ledger. Numpy only, no
torch. The functions are plain arithmetic, so they take Python floats, numpy arrays or torch
tensors alike; their operations and their order are part of the contract (changing them
changes every trajectory's last bits).

Positions are -1 short, 0 flat, +1 long; a table's column is ``position + 1``. One table per
action space (``ActionRules``; ``RULES[name]``, ``env.actions``):

``ORDERS`` (``actions="orders"``, Discrete(5), ``Action``):

| action \\ position | short (-1)   | flat (0)        | long (+1)    |
| ------------------ | ------------ | --------------- | ------------ |
| BUY_LONG           | INVALID      | OPEN -> long    | INVALID      |
| SELL_SHORT         | INVALID      | OPEN -> short   | INVALID      |
| CLOSE_LONG         | INVALID      | INVALID         | CLOSE -> flat|
| CLOSE_SHORT        | CLOSE -> flat| INVALID         | INVALID      |
| HOLD               | HOLD         | HOLD            | HOLD         |

``TARGETS`` (``actions="target"``, Discrete(3), ``Target``: the next position):

| action \\ position | short (-1)      | flat (0)      | long (+1)       |
| ------------------ | --------------- | ------------- | --------------- |
| SHORT (0)          | HOLD            | OPEN -> short | REVERSE -> short|
| FLAT (1)           | CLOSE -> flat   | HOLD          | CLOSE -> flat   |
| LONG (2)           | REVERSE -> long | OPEN -> long  | HOLD            |

A REVERSE is two orders at the same quoted price: the CLOSE of the position, then the OPEN of
the other side (sized from the cash after the close), each paying its own costs. Every cell
is carried out by the ledger as the orders ``ActionRules.legs`` lists.

An OPEN also needs the money for one lot (else it is rejected like an INVALID order; after a
REVERSE's close the position is then flat); an INVALID order changes nothing; HOLD pays
nothing. An OPEN pays ``entry_fee``, a CLOSE ``exit_fee``, each plus ``(proportional_rate +
side_rate) * fill * quantity``; an OPEN fills at ``price * (1 + side * slippage_rate)``, a
CLOSE at ``price * (1 - side * slippage_rate)`` (against the trader). ``side_rate`` is the
order side's own charge (``order_side_rate``: stamp duty on a buy, securities transaction
tax on a sell; a long entry and a short's exit buy, a short entry and a long's exit sell);
its default 0.0 leaves every other term bit for bit as it was. ``order_charge``: an order's
cost plus its slippage against the quote (the exact objective's per-order cost).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from metatrade.market.actions import Action, Target
from metatrade.market.costs import CostModel

POSITIONS = np.array([-1, 0, 1], dtype=np.int64)
"""the positions, in table-column order (column = position + 1)"""


class Order(IntEnum):
    """What an action does in a position (the cells of an ``ActionRules.order`` table)."""

    HOLD = 0  # nothing happens, nothing is paid
    OPEN = 1  # an entry on the cell's next position; pays the entry cost
    CLOSE = 2  # an exit of the whole position; pays the exit cost
    INVALID = 3  # rejected: the ledger is unchanged (the envs treat it as HOLD)
    REVERSE = 4  # CLOSE, then OPEN of the other side, at one price (target actions)


def _close_action(position: int) -> int:
    return int(Action.CLOSE_LONG if position > 0 else Action.CLOSE_SHORT)


def _open_action(side: int) -> int:
    return int(Action.BUY_LONG if side > 0 else Action.SELL_SHORT)


@dataclass(frozen=True, eq=False)
class FlatTable:
    """An action space's table flattened for vectorised lookups: index ``code_base[action] +
    position`` (= action * 3 + position + 1)."""

    code_base: np.ndarray
    want_open: np.ndarray
    want_close: np.ndarray
    invalid: np.ndarray
    entry_side: np.ndarray


@dataclass(frozen=True, eq=False)
class ActionRules:
    """One action space: ``order[a, position + 1]`` (an ``Order``) and ``next_position[a,
    position + 1]`` (after the order fills; INVALID and HOLD: unchanged; an OPEN that cannot
    afford one lot is rejected and leaves the position flat). Everything else derives."""

    name: str
    labels: tuple[str, ...]
    order: np.ndarray
    next_position: np.ndarray

    @property
    def num_actions(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def rows(self) -> tuple[tuple[int, ...], ...]:
        """``order`` as nested tuples: the scalar ledger's lookup (cheaper than numpy)."""
        return tuple(tuple(int(k) for k in row) for row in self.order)

    @functools.cached_property
    def opens(self) -> np.ndarray:
        """[action, position + 1] True where the cell opens a position (OPEN, REVERSE)."""
        return (self.order == Order.OPEN) | (self.order == Order.REVERSE)

    @functools.cached_property
    def closes(self) -> np.ndarray:
        """[action, position + 1] True where the cell closes the position (CLOSE, REVERSE)."""
        return (self.order == Order.CLOSE) | (self.order == Order.REVERSE)

    @functools.cached_property
    def entry_side(self) -> np.ndarray:
        """[action, position + 1] the side an opening cell enters (0 elsewhere)."""
        return np.where(self.opens, self.next_position, 0)

    @functools.cached_property
    def flat(self) -> FlatTable:
        """The table flattened (``BatchTradingEnv``'s one gather per step)."""
        return FlatTable(
            np.arange(self.num_actions, dtype=np.int64) * 3 + 1,
            self.opens.ravel(),
            self.closes.ravel(),
            (self.order == Order.INVALID).ravel(),
            self.entry_side.ravel(),
        )

    @functools.cached_property
    def legs(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """[action][position + 1] the ledger's orders (``Action`` values, in order) that carry
        the cell out: () for HOLD and INVALID, the close before the open of a REVERSE."""
        out = []
        for a in range(self.num_actions):
            row = []
            for p in POSITIONS.tolist():
                legs: tuple[int, ...] = (_close_action(p),) if self.closes[a, p + 1] else ()
                if self.opens[a, p + 1]:
                    legs += (_open_action(int(self.next_position[a, p + 1])),)
                row.append(legs)
            out.append(tuple(row))
        return tuple(out)

    @functools.cached_property
    def toward(self) -> np.ndarray:
        """[target + 1, position + 1] the action that moves ``position`` toward ``target`` in
        one bar: a valid action ending there with the fewest orders, else a close (orders:
        a reversal completes on the next bar)."""
        table = np.zeros((3, 3), dtype=np.int64)
        n_legs = np.array([[len(c) for c in row] for row in self.legs])
        valid = self.order != Order.INVALID
        for target in POSITIONS.tolist():
            for p in POSITIONS.tolist():
                ends = valid[:, p + 1] & (self.next_position[:, p + 1] == target)
                if not ends.any():
                    ends = valid[:, p + 1] & (self.next_position[:, p + 1] == 0)
                cost = np.where(ends, n_legs[:, p + 1], np.iinfo(np.int64).max)
                table[target + 1, p + 1] = int(np.argmin(cost))
        return table

    def transition_table(self) -> np.ndarray:
        """G[position + 1, action, next + 1] = 1 where the action takes the position there
        (float64 one-hot): the exact objective's M = sum over actions of pi G."""
        g = np.zeros((3, self.num_actions, 3))
        for a in range(self.num_actions):
            for p in range(3):
                g[p, a, self.next_position[a, p] + 1] = 1.0
        return g


def _orders_cell(action: int, position: int) -> Order:
    if action == Action.HOLD:
        return Order.HOLD
    if action in (Action.BUY_LONG, Action.SELL_SHORT):
        return Order.OPEN if position == 0 else Order.INVALID
    return Order.CLOSE if position == (1 if action == Action.CLOSE_LONG else -1) else Order.INVALID


def _target_cell(target: int, position: int) -> Order:
    if target == position:
        return Order.HOLD
    if position == 0:
        return Order.OPEN
    return Order.CLOSE if target == 0 else Order.REVERSE


def _make_rules(name: str, labels: tuple[str, ...], cell, entry) -> ActionRules:
    """A table from ``cell(action, position) -> Order`` and ``entry(action) -> side``."""
    order = np.zeros((len(labels), 3), dtype=np.int64)
    nxt = np.zeros((len(labels), 3), dtype=np.int64)
    for a in range(len(labels)):
        for p in POSITIONS.tolist():
            order[a, p + 1] = kind = cell(a, p)
            if kind in (Order.OPEN, Order.REVERSE):
                nxt[a, p + 1] = entry(a)
            else:
                nxt[a, p + 1] = 0 if kind == Order.CLOSE else p
    return ActionRules(name, labels, order, nxt)


ENTRY_SIDE = np.array([1, -1, 0, 0, 0], dtype=np.int64)
"""[action] the position an orders-space entry opens: BUY_LONG +1, SELL_SHORT -1, others 0"""
EXIT_SIDE = np.array([0, 0, 1, -1, 0], dtype=np.int64)
"""[action] the position an orders-space close closes: CLOSE_LONG +1, CLOSE_SHORT -1"""

ORDERS = _make_rules(
    "orders", tuple(a.name for a in Action), _orders_cell, lambda a: int(ENTRY_SIDE[a])
)
TARGETS = _make_rules(
    "target", tuple(t.name for t in Target), lambda a, p: _target_cell(a - 1, p), lambda a: a - 1
)
RULES: dict[str, ActionRules] = {"orders": ORDERS, "target": TARGETS}
"""``env.actions`` -> its table"""


def action_rules(actions: str | int) -> ActionRules:
    """The table of an action space, by name ("orders", "target") or by its size (5, 3: a
    policy's Categorical)."""
    if isinstance(actions, str) and actions in RULES:
        return RULES[actions]
    for rules in RULES.values():
        if not isinstance(actions, str) and int(actions) == rules.num_actions:
            return rules
    raise ValueError(
        f"action space {actions!r}: use one of {sorted(RULES)} "
        f"(Discrete({ORDERS.num_actions}) or Discrete({TARGETS.num_actions}))"
    )


# The orders table under its historical names (what the engine's own orders use).
ORDER = ORDERS.order
"""[action, position + 1] the Order an orders-space action makes in a position"""
ORDER_ROWS = ORDERS.rows
"""``ORDER`` as nested tuples: the scalar ledger's lookup (cheaper than numpy indexing)"""
NEXT_POSITION = ORDERS.next_position
"""[action, position + 1] the position after an orders-space action fills"""


def fee_table(costs: CostModel, rules: ActionRules = ORDERS) -> np.ndarray:
    """[action, position + 1] the fixed fees a cell pays (entry fee on OPEN, exit fee on
    CLOSE, both on REVERSE), for objectives that sum costs over the position's transitions."""
    return np.where(rules.closes, float(costs.exit_fee), 0.0) + np.where(
        rules.opens, float(costs.entry_fee), 0.0
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


def order_charge(
    price: Any,
    *,
    order_side: Any,
    quantity: Any,
    fee: Any,
    proportional_rate: Any,
    slippage_rate: Any,
    buy_rate: Any = 0.0,
    sell_rate: Any = 0.0,
) -> Any:
    """What one order on ``order_side`` (+1 a buy, -1 a sell) at quoted ``price`` costs the
    account against that quote: its order cost (the rate of every order plus its side's own,
    ``order_side_rate``) plus its slippage (``quantity`` times the fill's distance from the
    quote). An entry on side s is an order on side s; closing a side-s position is an order
    on side -s (closing a long sells)."""
    fill = entry_fill(price, order_side, slippage_rate)
    rate = proportional_rate + order_side_rate(order_side, buy_rate=buy_rate, sell_rate=sell_rate)
    cost = order_cost(fee=fee, fill=fill, quantity=quantity, proportional_rate=rate)
    return cost + order_side * quantity * (fill - price)


def transition_legs(position: int, next_position: int) -> tuple[bool, bool]:
    """(closes, opens): moving ``position`` -> ``next_position`` closes the old position if it
    is left and opens the new one if one is entered (a reversal does both)."""
    moved = next_position != position
    return moved and position != 0, moved and next_position != 0


def transition_charges(
    price: Any,
    *,
    quantity: Any,
    entry_fee: Any,
    exit_fee: Any,
    proportional_rate: Any,
    slippage_rate: Any,
    buy_rate: Any = 0.0,
    sell_rate: Any = 0.0,
) -> dict[tuple[int, int], Any]:
    """(position, next_position) -> what that move at quoted ``price`` costs against the
    quote (``transition_legs``: the close's ``order_charge`` plus the open's, each an order
    of its own with its side's own rate; 0.0 when unchanged), every leg computed once."""
    rates = {"quantity": quantity, "proportional_rate": proportional_rate}
    rates |= {"slippage_rate": slippage_rate, "buy_rate": buy_rate, "sell_rate": sell_rate}
    exits = {s: order_charge(price, order_side=-s, fee=exit_fee, **rates) for s in (-1, 1)}
    entries = {s: order_charge(price, order_side=s, fee=entry_fee, **rates) for s in (-1, 1)}
    out: dict[tuple[int, int], Any] = {}
    for s in (-1, 0, 1):
        for s2 in (-1, 0, 1):
            closes, opens = transition_legs(s, s2)
            total: Any = 0.0
            if closes:
                total = total + exits[s]
            if opens:
                total = total + entries[s2]
            out[(s, s2)] = total
    return out
