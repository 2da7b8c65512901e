"""The discrete trading actions shared by the ledger, TradingEnv and BatchTradingEnv."""

from __future__ import annotations

from enum import IntEnum


class Action(IntEnum):
    """Discrete(5) action space of the trading environments."""

    BUY_LONG = 0
    SELL_SHORT = 1
    CLOSE_LONG = 2
    CLOSE_SHORT = 3
    HOLD = 4


NUM_ACTIONS = len(Action)
