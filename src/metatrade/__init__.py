"""metatrade: meta-learned trading agents (MAML for RL on OHLCV tasks)."""
__version__ = "0.1.0"
