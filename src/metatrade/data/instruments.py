"""What each instrument is and where it trades: ``instruments.yaml`` beside the data files.

One description per instrument (schema in docs/data.md)::

    instruments:
      SPX:
        calendar: XNYS            # exchange_calendars name, NSE, 24/5, 24/7 or regular hours
        timezone: America/New_York # naive timestamps and shown times (default: the calendar's)
        currency: USD
        lot_size: 1               # units per lot: a number, a dated table, or a table's name
        tick_size: 0.01
        costs: {commission_bps: 0.5, half_spread_bps: 0.5, slippage_bps: 0.5}  # or a preset
        square_off: session_end   # or none: where env.square_off may close positions
    default: {calendar: XNYS, currency: USD}   # optional: every instrument not listed
    lot_tables: {...}             # optional: named dated lot tables (``lot_size: <name>``)

Without a description in the folder, the embedded instruments (Nifty, Bank_Nifty, Finnifty)
take their NSE description from the embedded sample's own ``instruments.yaml``; any other
name is an error that shows the lines to add. ``data.instruments`` (config) overrides keys
per instrument and ``data.timezone`` the time zone of every instrument.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metatrade.data.calendar import (
    WEEKS_PER_YEAR,
    MarketCalendar,
    Sessions,
    bars_per_session,
    bars_per_year,
    modal_session_minutes,
    resolve_calendar,
    sessions_to_bars,
)
from metatrade.data.instrument_fields import (
    LotSizes,
    field_error,
    parse_costs,
    parse_date_ns,
    parse_lot_sizes,
    parse_timezone,
)
from metatrade.data.naming import parse_timeframe
from metatrade.errors import DataError

INSTRUMENTS_FILE = "instruments.yaml"
EMBEDDED_FILE = Path(__file__).resolve().parent / "sample" / INSTRUMENTS_FILE
KEYS = (
    "calendar",
    "timezone",
    "currency",
    "lot_size",
    "tick_size",
    "costs",
    "square_off",
    "sessions_per_year",
    "special_sessions",
)
SQUARE_OFF = ("session_end", "none")


@dataclass(frozen=True)
class Instrument:
    """One instrument's market, resolved (module docstring for the keys). ``costs`` is a
    preset name or explicit terms (``metatrade.market.costs.cost_model`` reads it);
    ``source`` says where the description came from."""

    name: str
    calendar: MarketCalendar
    timezone: str
    currency: str
    costs: str | tuple[tuple[str, float], ...]
    lot_size: LotSizes = LotSizes()
    tick_size: float | None = None
    square_off: str = "session_end"
    sessions_per_year: float | None = None
    special_sessions: tuple[int, ...] = ()
    """days (since 1970-01-01) the calendar lists as closed but the exchange traded"""
    source: str = ""

    @property
    def annual_sessions(self) -> float:
        """Sessions per year: the description's, else the calendar's convention."""
        if self.sessions_per_year is not None:
            return float(self.sessions_per_year)
        return float(self.calendar.sessions_per_year)

    @property
    def cost_spec(self) -> str | dict[str, float]:
        return self.costs if isinstance(self.costs, str) else dict(self.costs)

    @property
    def cost_name(self) -> str:
        """The preset's name, or "custom" for explicit terms."""
        return self.costs if isinstance(self.costs, str) else "custom"


@dataclass(frozen=True)
class Market:
    """An instrument on one timeframe, with the regular session length its data shows:
    the clock every figure of a task reads (``TaskArrays.market``)."""

    instrument: Instrument
    timeframe: str
    session_minutes: float

    @classmethod
    def of(cls, instrument: Instrument, timeframe: str, sessions: Sessions) -> Market:
        return cls(instrument, str(timeframe), modal_session_minutes(sessions))

    @property
    def timezone(self) -> str:
        return self.instrument.timezone

    @property
    def currency(self) -> str:
        return self.instrument.currency

    @property
    def sessions_per_year(self) -> float:
        return self.instrument.annual_sessions

    @property
    def session_returns_per_year(self) -> float:
        """Returns a year of an equity curve taken once per session (the walk-forward's daily
        returns): the sessions a year, or the bars a year when a bar spans several sessions
        (2D, weekly bars: one return per bar)."""
        return min(self.sessions_per_year, float(self.bars_per_year))

    @property
    def bars_per_session(self) -> float:
        return bars_per_session(self.timeframe, self.session_minutes)

    @property
    def bars_per_year(self) -> float:
        """Annualisation factor of per-bar returns (``metatrade.data.calendar``)."""
        ppy = bars_per_year(
            self.timeframe,
            session_minutes=self.session_minutes,
            sessions_per_year=self.sessions_per_year,
        )
        return int(ppy) if float(ppy).is_integer() else ppy

    def sessions_to_bars(self, sessions: int) -> int:
        """Bars in ``sessions`` sessions (walk-forward folds given in sessions)."""
        return sessions_to_bars(sessions, self.timeframe, self.session_minutes)

    def annualisation(self) -> str:
        """How ``bars_per_year`` comes about, for reports."""
        tf = parse_timeframe(self.timeframe)
        spy, bpy = f"{self.sessions_per_year:g}", f"{self.bars_per_year:,g}"
        if tf.unit == "W":
            return f"{WEEKS_PER_YEAR} weeks/year / {tf.count} = {bpy} bars/year"
        if tf.unit == "D":
            return f"{spy} sessions/year / {tf.count} session(s) a bar = {bpy} bars/year"
        return f"{spy} sessions/year x {self.bars_per_session:g} bars/session = {bpy} bars/year"


def snippet(names: list[str]) -> str:
    """The instruments.yaml lines that describe ``names`` (one flow-style line)."""
    body = ", ".join(f"{n}: {{calendar: XNYS, currency: USD, costs: bps}}" for n in names[:3])
    return f"instruments: {{{body}}}"


def build_instrument(
    name: str, desc: Mapping[str, Any], *, where: str, tables: Mapping[str, Any]
) -> Instrument:
    """``Instrument`` of one description (a mapping of ``KEYS``); ``DataError`` names ``where``,
    the instrument, the key and the fix."""
    unknown = sorted(set(desc) - set(KEYS))
    if unknown:
        raise field_error(where, name, unknown[0], f"unknown key; the keys are {', '.join(KEYS)}")
    for key in ("calendar", "currency"):
        if desc.get(key) in (None, ""):
            raise field_error(where, name, key, f"missing; e.g. {snippet([name])}")
    tz = parse_timezone(desc["timezone"], where, name) if desc.get("timezone") else None
    try:
        cal = resolve_calendar(desc["calendar"], tz)
    except DataError as err:
        raise field_error(where, name, "calendar", str(err)) from None
    default_off = "none" if cal.kind in ("24/5", "24/7") else "session_end"
    square_off = str(desc.get("square_off", default_off))
    if square_off not in SQUARE_OFF:
        raise field_error(where, name, "square_off", f"{square_off!r}: use session_end or none")
    tick = desc.get("tick_size")
    if tick is not None and not (isinstance(tick, int | float) and tick > 0):
        raise field_error(where, name, "tick_size", f"{tick!r}: use a positive price increment")
    spy = desc.get("sessions_per_year")
    if spy is not None and not (isinstance(spy, int | float) and spy > 0):
        raise field_error(where, name, "sessions_per_year", f"{spy!r}: use a positive number")
    special = desc.get("special_sessions") or []
    if not isinstance(special, list):
        raise field_error(where, name, "special_sessions", "list the dates, e.g. [2024-11-01]")
    days = tuple(
        sorted(
            parse_date_ns(d, where, name, "special_sessions") // 86_400_000_000_000 for d in special
        )
    )
    return Instrument(
        name=name,
        calendar=cal,
        timezone=tz or cal.tz,
        currency=str(desc["currency"]),
        costs=parse_costs(desc.get("costs", "zero"), where, name),
        lot_size=parse_lot_sizes(desc.get("lot_size", 1), where, name, tables),
        tick_size=None if tick is None else float(tick),
        square_off=square_off,
        sessions_per_year=None if spy is None else float(spy),
        special_sessions=days,
        source=where,
    )


def read_descriptions(path: Path) -> dict[str, Any]:
    """The parsed file: ``{"instruments": {...}, "default": {...}, "lot_tables": {...}}``."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        flat = " ".join(str(err).split())
        raise DataError(f"{path}: not valid YAML ({flat}); see docs/data.md") from None
    unknown = (
        sorted(set(doc) - {"instruments", "default", "lot_tables"})
        if isinstance(doc, dict)
        else ["(not a mapping)"]
    )
    if unknown:
        raise DataError(
            f"{path}: top-level keys are instruments, default, lot_tables; found {unknown} "
            f"(e.g. {snippet(['SPX'])})"
        )
    for key in ("instruments", "default", "lot_tables"):
        if not isinstance(doc.get(key, {}), dict):
            raise DataError(f"{path}: '{key}' must be a mapping (e.g. {snippet(['SPX'])})")
    for name, desc in doc.get("instruments", {}).items():
        if not isinstance(desc, dict):
            raise DataError(
                f"{path}: instrument {name!r} must be a mapping of keys, got {desc!r} "
                f"(e.g. {snippet([str(name)])})"
            )
    return doc


@functools.cache
def _embedded() -> dict[str, Any]:
    return read_descriptions(EMBEDDED_FILE)


class InstrumentRegistry:
    """The instruments of one data folder: its ``instruments.yaml`` (if any), the embedded
    NSE descriptions for the embedded names, and the config's overrides.

    Args:
        folder: the data folder (``instruments.yaml`` beside the data files).
        overrides: instrument -> keys replacing the file's (``data.instruments``).
        timezone: time zone of every instrument (``data.timezone`` / ``--tz``), else each
            description's.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        timezone: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / INSTRUMENTS_FILE
        self.doc = read_descriptions(self.path) if self.path.is_file() else {}
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.timezone = timezone
        self._cache: dict[str, Instrument] = {}

    def _description(self, name: str) -> tuple[dict[str, Any], str] | None:
        own, embedded = self.doc.get("instruments", {}), _embedded()["instruments"]
        if name in own:
            return dict(own[name]), str(self.path)
        if "default" in self.doc:
            return dict(self.doc["default"]), f"{self.path} (default)"
        if name in embedded:
            return dict(embedded[name]), f"embedded NSE description ({EMBEDDED_FILE.name})"
        return None

    def get(self, name: str) -> Instrument:
        """The instrument ``name``, or ``DataError`` with the lines that would describe it."""
        if name not in self._cache:
            self._cache[name] = self._resolve(name)
        return self._cache[name]

    def _resolve(self, name: str) -> Instrument:
        found = self._description(name)
        if found is None and name not in self.overrides:
            raise DataError(self.missing_message([name]))
        desc, where = found or ({}, "data.instruments")
        if name in self.overrides:
            desc.update(self.overrides[name])
            where += " + data.instruments"
        if self.timezone:
            desc["timezone"] = self.timezone
        tables = {**_embedded().get("lot_tables", {}), **self.doc.get("lot_tables", {})}
        return build_instrument(name, desc, where=where, tables=tables)

    def missing_message(self, names: list[str], files: list[str] | None = None) -> str:
        listed = ", ".join(repr(n) for n in names)
        if files:
            listed += f" ({', '.join(files)})"
        has = "" if self.path.is_file() else " (the folder has none)"
        return (
            f"{self.folder}: no market description for instrument(s) {listed}; describe each "
            f"in {self.path}{has}, e.g. {snippet(names)} (keys: {', '.join(KEYS)}; "
            "schema: docs/data.md)"
        )
