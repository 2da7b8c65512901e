"""Position sizing: how many units an entry buys or sells.

The default spends a fixed fraction of current equity (brokerage included) on the entry,
in whole lots. Scalar and array forms compute with the same float operations in the same
order, so the single env and the batch env size positions bit-identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PositionSizer(Protocol):
    """Returns the entry quantity in units (a multiple of ``lot_size``; 0 = cannot afford).

    ``units_array`` must return finite values for every slot (BatchTradingEnv computes a
    candidate entry for all slots and masks it arithmetically), and the same numbers as
    ``units`` bit for bit, or the batch env stops matching TradingEnv.
    """

    def units(
        self,
        equity: float,
        fill_price: float,
        entry_fee: float,
        proportional_rate: float,
        lot_size: int,
    ) -> int: ...

    def units_array(
        self,
        equity: np.ndarray,
        fill_price: np.ndarray,
        entry_fee: np.ndarray,
        proportional_rate: np.ndarray,
        lot_size: np.ndarray,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class FixedFractionSizer:
    """Spend ``fraction`` of equity on an entry, fees included, in whole lots.

    units = floor((fraction * equity - entry_fee) / (fill * (1 + prop_rate)) / lot) * lot,
    so notional + entry cost never exceeds ``fraction * equity`` (no leverage when
    fraction <= 1). Shorts are sized the same way (margin = notional).
    """

    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not self.fraction > 0.0:
            raise ValueError(f"FixedFractionSizer.fraction={self.fraction!r}: use a value > 0")

    def units(
        self,
        equity: float,
        fill_price: float,
        entry_fee: float,
        proportional_rate: float,
        lot_size: int,
    ) -> int:
        budget = self.fraction * equity - entry_fee
        if budget <= 0.0:
            return 0
        lots = math.floor(budget / (fill_price * (1.0 + proportional_rate)) / lot_size)
        return max(lots, 0) * lot_size

    def units_array(
        self,
        equity: np.ndarray,
        fill_price: np.ndarray,
        entry_fee: np.ndarray,
        proportional_rate: np.ndarray,
        lot_size: np.ndarray,
    ) -> np.ndarray:
        """Vectorised ``units``; returns float64 unit counts (exact small integers)."""
        budget = self.fraction * equity - entry_fee
        lots = np.floor(budget / (fill_price * (1.0 + proportional_rate)) / lot_size)
        return np.where(budget > 0.0, lots, 0.0) * lot_size  # budget > 0 implies lots >= 0


@dataclass(frozen=True)
class FixedUnitsSizer:
    """Every entry trades ``quantity`` units, rounded down to whole lots of the instrument:
    the ledger setting in which the exact objective (``metatrade.exact``) has no
    approximation, since a bar's P&L then depends only on the position held.

    Implements ``metatrade.market.sizing.PositionSizer``; ignores equity and price (no
    affordability check beyond one lot: the ledger rejects an entry of 0 lots).
    """

    quantity: int

    def __post_init__(self) -> None:
        if int(self.quantity) != self.quantity or self.quantity < 1:
            raise ValueError(f"FixedUnitsSizer.quantity={self.quantity!r}: use an integer >= 1")

    def units(
        self,
        equity: float,
        fill_price: float,
        entry_fee: float,
        proportional_rate: float,
        lot_size: int,
    ) -> int:
        return int(self.quantity) // int(lot_size) * int(lot_size)

    def units_array(
        self,
        equity: np.ndarray,
        fill_price: np.ndarray,
        entry_fee: np.ndarray,
        proportional_rate: np.ndarray,
        lot_size: np.ndarray,
    ) -> np.ndarray:
        lots = np.floor(float(self.quantity) / np.asarray(lot_size, dtype=np.float64))
        return np.broadcast_to(lots * lot_size, np.shape(equity)).astype(np.float64)
