"""metatrade.market: the ledger, costs, and the trading environments (single and batched).

The task family over them is ``metatrade.envs.trading.TradingTaskFamily``.

Importing this package registers ``metatrade/Trading-v0`` with Gymnasium.
"""

from __future__ import annotations

import gymnasium as gym

from metatrade.market.actions import Action
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import RewardShaping, TradingEnvConfig
from metatrade.market.costs import CostModel, InstrumentSpec
from metatrade.market.engine import BacktestingEngine, Trade, TradeResult
from metatrade.market.env import TradingEnv
from metatrade.market.sizing import FixedFractionSizer, FixedUnitsSizer, PositionSizer

ENV_ID = "metatrade/Trading-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="metatrade.market.env:TradingEnv")

__all__ = [
    "ENV_ID",
    "Action",
    "BacktestingEngine",
    "BatchTradingEnv",
    "CostModel",
    "FixedFractionSizer",
    "FixedUnitsSizer",
    "InstrumentSpec",
    "PositionSizer",
    "RewardShaping",
    "Trade",
    "TradeResult",
    "TradingEnv",
    "TradingEnvConfig",
]
