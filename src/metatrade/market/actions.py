"""The discrete trading actions shared by the ledger, TradingEnv and BatchTradingEnv: the five
orders (``env.actions: orders``) and the three target positions (``env.actions: target``)."""

from __future__ import annotations

from enum import IntEnum


class Action(IntEnum):
    """Discrete(5) action space of the trading environments (``actions="orders"``); also the
    orders the ledger (``BacktestingEngine.execute_trade``) takes in every action space."""

    BUY_LONG = 0
    SELL_SHORT = 1
    CLOSE_LONG = 2
    CLOSE_SHORT = 3
    HOLD = 4


class Target(IntEnum):
    """Discrete(3) action space with ``actions="target"``: the position wanted after the bar's
    order (action = position + 1)."""

    SHORT = 0
    FLAT = 1
    LONG = 2


NUM_ACTIONS = len(Action)
