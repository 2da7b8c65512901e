"""A position sizer with a constant quantity: the ledger setting in which the exact
objective has no approximation (see ``metatrade.exact``).

With ``FixedUnitsSizer`` every entry trades the same number of units, so the ledger's P&L
of a bar depends only on the position held, never on the equity or the entry price, which is
exactly what the position recursion of ``metatrade.exact.objective`` assumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FixedUnitsSizer:
    """Every entry trades ``quantity`` units, rounded down to whole lots of the instrument.

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
