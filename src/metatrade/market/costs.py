"""Transaction costs and contract specifications, configurable per instrument.

Kept apart from the ledger so that one engine (or one batch env) can trade several
instruments with different brokerage, slippage and lot sizes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostModel:
    """What one order costs, in INR.

    An entry order pays ``entry_fee + proportional_bps / 1e4 * notional``; an exit order
    pays ``exit_fee + proportional_bps / 1e4 * notional``, where notional is
    ``fill_price * quantity``. Slippage moves the fill price against the trader by
    ``slippage_bps / 1e4`` of the quoted price (buys fill higher, sells lower).
    Defaults are the flat brokerage of the project's contracts (25 INR in, 35 INR out).
    """

    entry_fee: float = 25.0
    exit_fee: float = 35.0
    proportional_bps: float = 0.0
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        for name in ("entry_fee", "exit_fee", "proportional_bps", "slippage_bps"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"CostModel.{name}={value!r}: costs must be >= 0 INR / bps")

    @property
    def proportional_rate(self) -> float:
        """Proportional cost as a fraction of notional (bps / 1e4)."""
        return self.proportional_bps / 1e4

    @property
    def slippage_rate(self) -> float:
        """Slippage as a fraction of the quoted price (bps / 1e4)."""
        return self.slippage_bps / 1e4


@dataclass(frozen=True)
class InstrumentSpec:
    """Contract specification: orders are whole multiples of ``lot_size`` units."""

    name: str = "generic"
    lot_size: int = 1

    def __post_init__(self) -> None:
        if int(self.lot_size) != self.lot_size or self.lot_size < 1:
            raise ValueError(
                f"InstrumentSpec({self.name!r}).lot_size={self.lot_size!r}: use a positive integer"
            )
