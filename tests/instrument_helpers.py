"""Market descriptions for test data with made-up instrument names (the loader refuses an
instrument it has no description of, rather than assuming the NSE)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from metatrade.data.instruments import INSTRUMENTS_FILE, Market
from metatrade.data.synthetic import SYNTHETIC_MARKET, synthetic_instrument

NSE_HOURS = {"calendar": "NSE", "currency": "INR", "costs": "origin"}
"""an NSE-listed instrument with the origin's costs (the data of the validation tests)"""


def describe_instruments(
    folder: Path, default: dict[str, Any] | None = None, **instruments: dict[str, Any]
) -> Path:
    """Write ``folder/instruments.yaml``: ``default`` for every instrument (NSE_HOURS when
    not given) and any named ``instruments``."""
    doc: dict[str, Any] = {"default": dict(default or NSE_HOURS)}
    if instruments:
        doc["instruments"] = instruments
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / INSTRUMENTS_FILE
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def synthetic_market(name: str, timeframe: str, session_minutes: float) -> Market:
    """The synthetic family's market (``SYNTHETIC_MARKET``) for hand-made arrays."""
    return Market(synthetic_instrument(name), str(timeframe), float(session_minutes))


__all__ = ["NSE_HOURS", "SYNTHETIC_MARKET", "describe_instruments", "synthetic_market"]
