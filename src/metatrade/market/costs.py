"""Transaction costs and contract specifications, configurable per instrument.

Kept apart from the ledger so that one engine (or one batch env) can trade several
instruments with different brokerage, statutory charges, slippage and lot sizes. The
arithmetic that charges them is ``metatrade.market.rules`` (``order_cost``, fills).

Cost presets (``cost_model(name)``; sources and dates in docs/market.md):

| preset | what |
| --- | --- |
| ``origin`` | the origin's flat brokerage: 25 per entry order, 35 per exit order |
| ``zero`` | no costs at all |
| ``nse_index_futures`` | NSE index futures at a discount broker, rates from 2024-10-01 |
| ``nse_cash_intraday`` | NSE equity intraday at a discount broker, rates from 2024-10-01 |
| ``bps`` | the generic model for other markets, 0.5 bps each of commission, half-spread, slippage |

Explicit terms are a mapping: the generic model's ``commission_bps``, ``half_spread_bps``,
``slippage_bps`` (any subset), or ``CostModel``'s own fields (``entry_fee``, ``exit_fee``,
``proportional_bps``, ``buy_bps``, ``sell_bps``, ``slippage_bps``); with ``preset``, that
preset with some of ``CostModel``'s fields replaced. The same forms serve an instrument's
``costs`` in instruments.yaml and the run config's ``env.costs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

_GST = 0.18
"""Goods and services tax on brokerage, exchange and SEBI charges (India)"""
_SEBI_BPS = 0.01
"""SEBI turnover fee: 10 INR per crore (1e7) of turnover"""
_BROKERAGE_INR = 20.0
"""discount brokers' per-order cap (0.03% or 20 INR, whichever is lower; 20 INR binds
above 66,667 INR of notional)"""


_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


@pydantic_dataclass(frozen=True, config=_STRICT)
class CostModel:
    """What one order costs, in the instrument's currency.

    An order pays its fixed fee (``entry_fee`` on an entry, ``exit_fee`` on an exit) plus
    ``(proportional_bps + side_bps) / 1e4 * notional``, where notional is ``fill * quantity``
    and ``side_bps`` is ``buy_bps`` on a buy order (a long entry, a short's exit) and
    ``sell_bps`` on a sell order (statutory charges on one side: stamp duty on buys,
    securities transaction tax on sells). Slippage moves the fill price against the trader
    by ``slippage_bps / 1e4`` of the quoted price (buys fill higher, sells lower).
    Defaults are the flat brokerage of the origin's contracts (25 in, 35 out): the
    ``origin`` preset. ``name`` labels reports (a preset's name, or "" for custom terms).
    The run config's ``env.costs`` is this class (``cost_model`` reads its other forms).
    """

    entry_fee: float = Field(default=25.0, ge=0, description="money per entry order")
    exit_fee: float = Field(default=35.0, ge=0, description="money per exit order")
    proportional_bps: float = Field(default=0.0, ge=0, description="bps of notional, every order")
    slippage_bps: float = Field(default=0.0, ge=0, description="fill moved against the trader, bps")
    buy_bps: float = Field(default=0.0, ge=0, description="bps of notional, buy orders only")
    sell_bps: float = Field(default=0.0, ge=0, description="bps of notional, sell orders only")
    name: str = Field(
        default="", description="label in reports: a preset's name, '' for custom terms"
    )

    @property
    def proportional_rate(self) -> float:
        """Proportional cost of every order as a fraction of notional (bps / 1e4)."""
        return self.proportional_bps / 1e4

    @property
    def slippage_rate(self) -> float:
        """Slippage as a fraction of the quoted price (bps / 1e4)."""
        return self.slippage_bps / 1e4

    @property
    def buy_rate(self) -> float:
        """Extra proportional cost of a buy order (bps / 1e4)."""
        return self.buy_bps / 1e4

    @property
    def sell_rate(self) -> float:
        """Extra proportional cost of a sell order (bps / 1e4)."""
        return self.sell_bps / 1e4

    @property
    def side_dependent(self) -> bool:
        return bool(self.buy_bps or self.sell_bps)

    @property
    def per_side_bps(self) -> float:
        """Mean proportional cost of one order side (a round trip pays a buy and a sell)."""
        return self.proportional_bps + (self.buy_bps + self.sell_bps) / 2.0

    @property
    def label(self) -> str:
        return self.name or "custom"

    def describe(self, currency: str = "") -> str:
        """One line for reports: the preset's name and every non-zero term."""
        cur = f" {currency}" if currency else ""
        terms = [f"entry {self.entry_fee:g}{cur} + exit {self.exit_fee:g}{cur} per order"]
        for key, text in _DESCRIBED.items():
            if getattr(self, key):
                terms.append(f"{getattr(self, key):g} {text}")
        return f"{self.label}: " + ", ".join(terms)


_DESCRIBED = {
    "proportional_bps": "bps/side",
    "buy_bps": "bps on buys",
    "sell_bps": "bps on sells",
    "slippage_bps": "bps slippage",
}
"""the proportional terms ``CostModel.describe`` lists when non-zero, and their units"""


def bps_model(
    commission_bps: float = 0.5, half_spread_bps: float = 0.5, slippage_bps: float = 0.5
) -> CostModel:
    """The generic model for any market: a commission on both sides (bps of notional) and
    a fill moved against the trader by half the bid-ask spread plus slippage (bps)."""
    return CostModel(
        entry_fee=0.0,
        exit_fee=0.0,
        proportional_bps=float(commission_bps),
        slippage_bps=float(half_spread_bps) + float(slippage_bps),
        name="bps",
    )


def _nse(*, exchange_bps: float, stamp_bps: float, stt_bps: float, name: str) -> CostModel:
    """An NSE segment at a discount broker: brokerage per order, exchange and SEBI charges
    on both sides, GST on those three, stamp duty on buys, STT on sells."""
    fee = _BROKERAGE_INR * (1.0 + _GST)
    return CostModel(
        entry_fee=fee,
        exit_fee=fee,
        proportional_bps=(exchange_bps + _SEBI_BPS) * (1.0 + _GST),
        buy_bps=stamp_bps,
        sell_bps=stt_bps,
        name=name,
    )


PRESETS: dict[str, CostModel] = {
    "origin": CostModel(name="origin"),
    "zero": CostModel(entry_fee=0.0, exit_fee=0.0, name="zero"),
    # NSE futures: exchange 0.00173%, stamp 0.002% (buy), STT 0.02% (sell), from 2024-10-01.
    "nse_index_futures": _nse(
        exchange_bps=0.173, stamp_bps=0.2, stt_bps=2.0, name="nse_index_futures"
    ),
    # NSE cash intraday: exchange 0.00297%, stamp 0.003% (buy), STT 0.025% (sell).
    "nse_cash_intraday": _nse(
        exchange_bps=0.297, stamp_bps=0.3, stt_bps=2.5, name="nse_cash_intraday"
    ),
    "bps": bps_model(),
}
_BPS_TERMS = ("commission_bps", "half_spread_bps", "slippage_bps")
_MODEL_TERMS = tuple(f.name for f in fields(CostModel) if f.name != "name")
COST_KEYS = frozenset({"preset", "name", *_MODEL_TERMS, *_BPS_TERMS})
"""every key a mapping of costs may hold (``cost_model``)"""


def cost_model(spec: str | Mapping[str, Any] | CostModel | None) -> CostModel:
    """``CostModel`` of a preset name or a mapping (module docstring): explicit terms (those
    not given are 0), or ``preset`` with some of ``CostModel``'s terms replaced; null values
    count as not given. ``ValueError`` names the preset or term and lists what is accepted."""
    if isinstance(spec, CostModel):
        return spec
    if spec is None:
        return PRESETS["origin"]
    if isinstance(spec, str):
        return _preset(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"costs {spec!r}: give a preset name or a mapping of terms")
    terms = {str(k): v for k, v in spec.items() if v is not None}
    preset, name = terms.pop("preset", None), terms.pop("name", None)
    bad = [k for k, v in terms.items() if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        raise ValueError(f"costs term {bad[0]}={terms[bad[0]]!r}: use a number >= 0")
    if preset is not None:
        return _adjusted(_preset(str(preset)), terms)
    if not terms:
        return PRESETS["zero"]
    label = "" if name is None else str(name)
    if set(terms) <= set(_BPS_TERMS):
        defaults = dict.fromkeys(_BPS_TERMS, 0.0)
        return replace(bps_model(**{**defaults, **terms}), name=label)
    unknown = sorted(set(terms) - set(_MODEL_TERMS))
    if unknown or set(terms) & (set(_BPS_TERMS) - {"slippage_bps"}):
        raise ValueError(
            f"costs terms {sorted(terms)}: use the generic model's ({', '.join(_BPS_TERMS)}) "
            f"or CostModel's ({', '.join(_MODEL_TERMS)}), not a mix"
        )
    return CostModel(**{"entry_fee": 0.0, "exit_fee": 0.0, **terms}, name=label)


def _preset(name: str) -> CostModel:
    if name not in PRESETS:
        raise ValueError(
            f"cost preset {name!r}: use one of {', '.join(PRESETS)} or explicit terms "
            f"({', '.join(_BPS_TERMS)}) or ({', '.join(_MODEL_TERMS)})"
        )
    return PRESETS[name]


def _adjusted(base: CostModel, terms: dict[str, Any]) -> CostModel:
    """``base`` with some of ``CostModel``'s terms replaced (a preset adjusted)."""
    unknown = sorted(set(terms) - set(_MODEL_TERMS))
    if unknown:
        raise ValueError(
            f"{unknown} cannot adjust preset {base.name!r}: use CostModel's terms "
            f"({', '.join(_MODEL_TERMS)})"
        )
    return replace(base, **terms) if terms else base


@dataclass(frozen=True)
class InstrumentSpec:
    """Contract specification: orders are whole multiples of ``lot_size`` units, or, with
    ``lot_changes`` ((from ns UTC, size), ...; an exchange revising its lots), of the lot in
    force when the entry fills (``lot_at``)."""

    name: str = "generic"
    lot_size: int = 1
    lot_changes: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        for size in (self.lot_size, *(s for _, s in self.lot_changes)):
            if int(size) != size or size < 1:
                raise ValueError(
                    f"InstrumentSpec({self.name!r}) lot size {size!r}: use a positive integer"
                )

    def lot_at(self, timestamps: Any) -> Any:
        """Lot in force at each time (int64 ns UTC; a scalar gives an int)."""
        if not self.lot_changes:
            return (
                self.lot_size
                if np.ndim(timestamps) == 0
                else np.full(np.shape(timestamps), self.lot_size, dtype=np.int64)
            )
        starts = np.array([t for t, _ in self.lot_changes], dtype=np.int64)
        sizes = np.array([self.lot_size, *(s for _, s in self.lot_changes)], dtype=np.int64)
        out = sizes[np.searchsorted(starts, timestamps, side="right")]
        return int(out) if np.ndim(timestamps) == 0 else out


def instrument_spec(instrument: Any) -> InstrumentSpec:
    """``InstrumentSpec`` of a data-layer ``Instrument`` (its lot size, dated or not)."""
    lots = instrument.lot_size
    changes = tuple(zip(lots.starts[1:], lots.sizes[1:], strict=True))
    return InstrumentSpec(instrument.name, lots.sizes[0], changes)


def lots_by_row(arrays_list: Any, specs: list[InstrumentSpec]) -> np.ndarray | None:
    """The lot in force at every bar of tasks laid end to end (float64 [sum of N]), or None
    when no instrument's lot changes (then one lot per task does)."""
    if not any(s.lot_changes for s in specs):
        return None
    rows = [s.lot_at(a.timestamps) for a, s in zip(arrays_list, specs, strict=True)]
    return np.concatenate(rows).astype(np.float64)
