"""metatrade: meta-learned trading agents (MAML for RL on OHLCV tasks).

The names below are imported lazily, so ``import metatrade`` (and ``metatrade data ...``)
stays fast and does not load torch until a torch-backed name is used::

    from metatrade import DataLoader, Trainer, load_config

``import metatrade`` registers the Gymnasium environment ``metatrade/Trading-v0``
(``metatrade.market.env.TradingEnv``); ``gymnasium.make("metatrade/Trading-v0")`` with no
arguments trades the embedded NIFTY 50 15-minute bars (``DEFAULT_TASK``), train split.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
ENV_ID = "metatrade/Trading-v0"


def _register_env() -> None:
    """Register ``ENV_ID`` with Gymnasium (the entry point is imported only on ``make``)."""
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="metatrade.market.env:TradingEnv")


_register_env()

_EXPORTS: dict[str, str] = {
    "DataLoader": "metatrade.data",
    "TaskId": "metatrade.data",
    "SplitConfig": "metatrade.data",
    "HeldOut": "metatrade.data",
    "BacktestingEngine": "metatrade.market",
    "CostModel": "metatrade.market",
    "TradingEnv": "metatrade.market",
    "TradingEnvConfig": "metatrade.market",
    "BatchTradingEnv": "metatrade.market",
    "TradingTaskFamily": "metatrade.envs.trading",
    "MetaConfig": "metatrade.meta",
    "MetaLearner": "metatrade.meta",
    "adapt": "metatrade.meta",
    "make_policy": "metatrade.agents",
    "PPOAgent": "metatrade.agents",
    "PPOConfig": "metatrade.agents",
    "MAMLAgent": "metatrade.agents",
    "Trainer": "metatrade.training",
    "load_config": "metatrade.training",
    "compute_metrics": "metatrade.evaluation",
    "run_backtest_and_report": "metatrade.evaluation",
    "MetaTestProtocol": "metatrade.evaluation",
}

__all__ = ["ENV_ID", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'metatrade' has no attribute {name!r}")
