"""Trading sessions: the one module that knows when a market trades.

Every clock-dependent figure reads it from here: the session each bar belongs to
(``assign_sessions``), the last bar of each session (square-off, daily returns), the
sessions missing between two bars (gap checks), the session-relative time features, and
bars per year (``bars_per_year``). Sessions come from ``exchange_calendars`` (holidays,
early closes, lunch breaks, daylight saving) through one ``ExchangeCalendar`` per market:

* an exchange_calendars name: ``XNYS``, ``XLON``, ``CMES``, ``XBOM``, ... (``NSE`` is an
  alias of ``XBOM``: the BSE keeps the NSE's sessions and holidays);
* ``24/5``: the FX week, Monday to Friday, each session the 24 hours ending 17:00
  America/New_York (the value-date roll: a Sunday-evening bar belongs to Monday);
* ``24/7``: every day, UTC midnight to midnight (exchange_calendars' own ``24/7``);
* regular hours ``{open: "09:15", close: "15:30", weekdays: [Mon, Tue, Wed, Thu, Fri]}`` in
  the instrument's time zone, no holidays: a market exchange_calendars lacks, and the
  synthetic family. A close at or before the open means the session opens the day before
  (as the CME's 17:00-16:00); ``close: "24:00"`` ends at midnight.

A bar belongs to the session whose [open, close) holds its time; a bar outside every
session (pre-open, post-close, a daily bar stamped at midnight) belongs to the session of
its date in the instrument's time zone, and a bar on a date the calendar lists as closed
(Muhurat trading, a Saturday budget session) forms its own session with the calendar's
regular hours that date: the data says the market traded.

Annualisation convention (``SESSIONS_PER_YEAR``): 252 sessions a year for a calendar with
fixed hours (an exchange or regular hours), 260 for ``24/5`` (52 x 5), 365 for ``24/7``.
Bars per session = ceil(session minutes / bar minutes), the session's length being the most
common one in the data's span (the last bar of a session may be short: 375-minute NSE
sessions give 9 bars of 45 minutes), so ``bars_per_year = 252 * ceil(375 / m)`` for the NSE
and ``260 * 24 = 6240`` for hourly FX; a ``<N>D`` bar is N sessions, a ``<N>W`` bar N of
52 weeks.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import numpy as np
import pandas as pd
from exchange_calendars.exchange_calendar import ExchangeCalendar

from metatrade.data.naming import Timeframe, parse_timeframe
from metatrade.errors import DataError

ALIASES = {"NSE": "XBOM", "BSE": "XBOM"}
"""calendar names accepted besides exchange_calendars' own"""
SESSIONS_PER_YEAR = {"exchange": 252, "hours": 252, "24/5": 260, "24/7": 365}
WEEKS_PER_YEAR = 52
GAP_SESSIONS = 3
"""more scheduled sessions than this without a bar between two bars: a gap warning"""
_DAY_NS = 86_400 * 10**9
_MINUTE_NS = 60 * 10**9
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _hhmm(text: str, what: str) -> tuple[time, int]:
    """("HH:MM" -> time, day offset): "24:00" is midnight of the next day."""
    try:
        h, m = (int(x) for x in str(text).split(":"))
    except ValueError:
        h = m = -1
    if (h, m) == (24, 0):
        return time(0), 1
    if not (0 <= h < 24 and 0 <= m < 60):
        raise DataError(f'calendar {what}: {text!r} is not a time; write it as "HH:MM"')
    return time(h, m), 0


def _hours_class(
    name: str, tz: str, open_: str, close: str, weekmask: str
) -> type[ExchangeCalendar]:
    """An exchange_calendars calendar with regular hours and no holidays."""
    t_open, _ = _hhmm(open_, "open")
    t_close, close_next = _hhmm(close, "close")
    overnight = not close_next and (t_close.hour, t_close.minute) <= (t_open.hour, t_open.minute)
    attrs = {
        "name": name,
        "tz": ZoneInfo(tz),
        "open_times": ((None, t_open),),
        "close_times": ((None, t_close),),
        "open_offset": -1 if overnight else 0,
        "close_offset": close_next,
        "weekmask": weekmask,
    }
    return type("RegularHoursCalendar", (ExchangeCalendar,), attrs)


@dataclass(frozen=True)
class MarketCalendar:
    """A market's calendar, resolved: ``name`` as written, ``kind`` ("exchange", "24/5",
    "24/7", "hours"), exchange_calendars ``code`` or the regular ``hours`` (open, close,
    weekmask), and the calendar's own time zone."""

    name: str
    kind: str
    tz: str
    code: str | None = None
    hours: tuple[str, str, str] | None = None

    @property
    def sessions_per_year(self) -> int:
        return SESSIONS_PER_YEAR[self.kind]

    def describe(self) -> str:
        if self.kind == "hours":
            assert self.hours is not None
            open_, close, mask = self.hours
            on = [d for d, bit in zip(_WEEKDAYS, mask, strict=True) if bit == "1"]
            run = mask.strip("0") == "1" * len(on)  # consecutive days: "Mon-Fri"
            days = f"{on[0]}-{on[-1]}" if run and len(on) > 2 else ",".join(on)
            return f"{open_}-{close} {days}"
        alias = f" ({self.code})" if self.code and self.code != self.name else ""
        return f"{self.name}{alias}"

    def _factory(self) -> type[ExchangeCalendar] | str:
        if self.kind == "exchange":
            assert self.code is not None
            return self.code
        if self.kind == "24/7":
            return "24/7"
        if self.kind == "24/5":
            return _hours_class("24/5", "America/New_York", "17:00", "17:00", "1111100")
        assert self.hours is not None
        return _hours_class(self.name, self.tz, *self.hours)

    def calendar(self, first_ns: int, last_ns: int) -> ExchangeCalendar:
        """The exchange_calendars calendar covering the years of [first_ns, last_ns]."""
        first = pd.Timestamp(first_ns, tz="UTC").year
        last = pd.Timestamp(last_ns, tz="UTC").year
        return _build(self, first, last)


def _exchange_class(code: str) -> type[ExchangeCalendar]:
    """exchange_calendars' class of a calendar name (no instance built: that takes ~1 s)."""
    return xcals.calendar_utils._default_calendar_factories[code]


@functools.lru_cache(maxsize=32)
def _build(cal: MarketCalendar, first_year: int, last_year: int) -> ExchangeCalendar:
    factory = cal._factory()
    cls = _exchange_class(factory) if isinstance(factory, str) else factory
    start = pd.Timestamp(f"{first_year - 1}-12-01")
    end = pd.Timestamp(f"{last_year + 1}-01-31")
    lo, hi = cls.bound_min(), cls.bound_max()
    if (lo is not None and pd.Timestamp(f"{first_year}-01-01") < lo) or (
        hi is not None and pd.Timestamp(f"{last_year}-12-31") > hi
    ):
        raise DataError(
            f"calendar {cal.describe()} knows sessions from {lo.date() if lo is not None else '-'} "
            f"to {hi.date() if hi is not None else '-'}, but the data spans {first_year} to "
            f"{last_year}; trim the data or describe the market with regular hours "
            '(calendar: {open: "HH:MM", close: "HH:MM"})'
        )
    start = start if lo is None else max(start, lo)
    end = end if hi is None else min(end, hi)
    with warnings.catch_warnings():  # exchange_calendars' own use of deprecated pandas API
        warnings.simplefilter("ignore", getattr(pd.errors, "Pandas4Warning", FutureWarning))
        return cls(start=start, end=end)


def resolve_calendar(spec: str | Mapping[str, object], tz: str | None = None) -> MarketCalendar:
    """``MarketCalendar`` of an instruments.yaml ``calendar`` value (module docstring);
    ``tz`` is the instrument's time zone, required for regular hours. ``DataError`` names
    what is wrong and the accepted forms."""
    if isinstance(spec, Mapping):
        return _resolve_hours(spec, tz)
    name = str(spec).strip()
    if name in ("24/5", "24/7"):
        return MarketCalendar(name, name, "America/New_York" if name == "24/5" else "UTC")
    code = ALIASES.get(name.upper(), name)
    if code not in xcals.get_calendar_names(include_aliases=True):
        raise DataError(
            f"calendar {name!r}: not an exchange_calendars name; use e.g. XNYS, XLON, CMES, "
            'NSE (= XBOM), 24/5, 24/7, or regular hours {open: "09:30", close: "16:00"}'
        )
    code = xcals.resolve_alias(code)
    return MarketCalendar(name, "exchange", str(_exchange_class(code).tz), code=code)


def _resolve_hours(spec: Mapping[str, object], tz: str | None) -> MarketCalendar:
    unknown = sorted(set(spec) - {"open", "close", "weekdays"})
    if unknown or "open" not in spec or "close" not in spec:
        raise DataError(
            f'calendar {dict(spec)}: regular hours take open, close ("HH:MM") and optionally '
            f"weekdays (default Mon-Fri){'; unknown: ' + ', '.join(unknown) if unknown else ''}"
        )
    if tz is None:
        raise DataError(f"calendar {dict(spec)}: regular hours need the instrument's timezone")
    days = spec.get("weekdays", list(_WEEKDAYS[:5]))
    if not isinstance(days, list) or any(str(d)[:3].title() not in _WEEKDAYS for d in days):
        raise DataError(f"calendar weekdays {days!r}: list days as [Mon, Tue, Wed, Thu, Fri]")
    on = {str(d)[:3].title() for d in days}
    mask = "".join("1" if d in on else "0" for d in _WEEKDAYS)
    open_, close = str(spec["open"]), str(spec["close"])
    _hhmm(open_, "open"), _hhmm(close, "close")
    return MarketCalendar(f"{open_}-{close}", "hours", tz, hours=(open_, close, mask))


@dataclass(frozen=True)
class Schedule:
    """The scheduled sessions of a span: ``labels`` int64 [S] (days since 1970-01-01, the
    session's date), ``opens``/``closes`` int64 ns UTC [S], ``minutes`` float64 [S] (trading
    minutes: close - open less any lunch break)."""

    labels: np.ndarray
    opens: np.ndarray
    closes: np.ndarray
    minutes: np.ndarray


def _ns(col: pd.Series) -> np.ndarray:
    return np.asarray(col.array.as_unit("ns").asi8, dtype=np.int64)


@functools.lru_cache(maxsize=32)
def _schedule(cal: MarketCalendar, first_year: int, last_year: int) -> Schedule:
    sched = _build(cal, first_year, last_year).schedule
    opens, closes = _ns(sched["open"]), _ns(sched["close"])
    minutes = (closes - opens) / _MINUTE_NS
    if "break_start" in sched:
        brk = (_ns(sched["break_end"]) - _ns(sched["break_start"])) / _MINUTE_NS
        minutes = minutes - np.where(sched["break_start"].notna().to_numpy(), brk, 0.0)
    labels = sched.index.values.astype("datetime64[D]").astype(np.int64)
    return Schedule(labels, opens, closes, minutes)


def schedule(cal: MarketCalendar, first_ns: int, last_ns: int) -> Schedule:
    """Every scheduled session of the years spanned by [first_ns, last_ns] (cached)."""
    first = pd.Timestamp(int(first_ns), tz="UTC").year
    last = pd.Timestamp(int(last_ns), tz="UTC").year
    return _schedule(cal, first, last)


@dataclass(frozen=True)
class Sessions:
    """The session of each bar: ``label`` int64 [N] (days since 1970-01-01), its ``open`` and
    ``close`` int64 ns UTC [N], its trading ``minutes`` [N], and ``scheduled`` bool [N]
    (False: a session the calendar lists as closed, kept with regular hours)."""

    label: np.ndarray
    open: np.ndarray
    close: np.ndarray
    minutes: np.ndarray
    scheduled: np.ndarray


def _local_days(ts: np.ndarray, tz: str) -> np.ndarray:
    local = pd.DatetimeIndex(ts.view("M8[ns]")).tz_localize("UTC").tz_convert(tz)
    return np.asarray(local.tz_localize(None).asi8, dtype=np.int64) // _DAY_NS


def _regular(cal: MarketCalendar, labels: np.ndarray, ref: ExchangeCalendar) -> tuple:
    """(open ns, close ns, minutes) of the calendar's regular hours on dates ``labels``."""
    days = pd.DatetimeIndex(labels.astype("datetime64[D]"))

    def at(t: time, offset: int) -> np.ndarray:
        naive = days + pd.Timedelta(days=offset, hours=t.hour, minutes=t.minute)
        return np.asarray(
            naive.tz_localize(ref.tz, ambiguous="NaT", nonexistent="shift_forward")
            .tz_convert("UTC")
            .as_unit("ns")
            .asi8,
            dtype=np.int64,
        )

    opens = at(ref.open_times[-1][1], ref.open_offset)
    closes = at(ref.close_times[-1][1], ref.close_offset)
    return opens, closes, (closes - opens) / _MINUTE_NS


def assign_sessions(timestamps: np.ndarray, cal: MarketCalendar, tz: str) -> Sessions:
    """The session of every bar of sorted ``timestamps`` (int64 ns UTC [N]); the rule is in
    the module docstring (``tz``: the instrument's zone, for bars outside every session)."""
    ts = np.asarray(timestamps, dtype=np.int64)
    if ts.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return Sessions(z, z, z, z.astype(float), z.astype(bool))
    sch = schedule(cal, int(ts[0]), int(ts[-1]))
    n_s = len(sch.labels)
    i = np.searchsorted(sch.closes, ts, side="right")
    ic = np.minimum(i, n_s - 1)
    inside = (i < n_s) & (sch.opens[ic] <= ts)
    label = np.where(inside, sch.labels[ic], _local_days(ts, tz))
    j = np.minimum(np.searchsorted(sch.labels, label), n_s - 1)
    found = sch.labels[j] == label
    opens, closes, minutes = sch.opens[j], sch.closes[j], sch.minutes[j]
    if not found.all():
        extra = np.unique(label[~found])
        o, c, m = _regular(cal, extra, cal.calendar(int(ts[0]), int(ts[-1])))
        k = np.searchsorted(extra, label[~found])
        opens, closes, minutes = opens.copy(), closes.copy(), minutes.copy()
        opens[~found], closes[~found], minutes[~found] = o[k], c[k], m[k]
    return Sessions(label, opens, closes, minutes, found)


def session_ends(labels: np.ndarray) -> np.ndarray:
    """bool [N]: True on the last bar of each session (and on the last bar)."""
    labels = np.asarray(labels)
    end = np.ones(len(labels), dtype=bool)
    end[:-1] = labels[1:] != labels[:-1]
    return end


def sessions_per_bar(timeframe: str | Timeframe) -> int:
    """Sessions one bar spans: 1 intraday, N for ``<N>D``, 5N for ``<N>W``."""
    tf = timeframe if isinstance(timeframe, Timeframe) else parse_timeframe(timeframe)
    return 1 if tf.intraday else tf.count * (5 if tf.unit == "W" else 1)


def missing_sessions(
    labels: np.ndarray, cal: MarketCalendar, first_ns: int, last_ns: int, per_bar: int = 1
):
    """``(label before, label after, scheduled sessions between)`` for every pair of
    consecutive traded sessions of ``labels`` [N] with more than ``GAP_SESSIONS`` scheduled
    sessions and no bar between them, beyond the ``per_bar - 1`` a bar spanning ``per_bar``
    sessions leaves (holidays are not scheduled, so not a gap)."""
    days = np.unique(np.asarray(labels, dtype=np.int64))
    if len(days) < 2:
        return []
    sch = schedule(cal, first_ns, last_ns)
    between = np.searchsorted(sch.labels, days[1:]) - np.searchsorted(
        sch.labels, days[:-1], side="right"
    )
    return [
        (_date(days[i]), _date(days[i + 1]), int(between[i]))
        for i in np.flatnonzero(between > GAP_SESSIONS + per_bar - 1)
    ]


def _date(label: int) -> str:
    return str(np.datetime64(int(label), "D"))


def modal_session_minutes(sessions: Sessions) -> float:
    """The most common trading length of the scheduled sessions the bars fall in (the
    regular length, in minutes); of all sessions when none is scheduled."""
    pick = sessions.scheduled if sessions.scheduled.any() else np.ones_like(sessions.scheduled)
    first = np.ones(len(sessions.label), dtype=bool)
    first[1:] = sessions.label[1:] != sessions.label[:-1]
    values, counts = np.unique(sessions.minutes[first & pick], return_counts=True)
    return float(values[np.argmax(counts)]) if len(values) else float("nan")


def bars_per_session(timeframe: str | Timeframe, session_minutes: float) -> float:
    """Bars of ``timeframe`` in one session: ceil(session / bar) intraday (the last bar may be
    short), 1/N for ``<N>D``; for ``<N>W`` a session's share of a week's bar."""
    tf = timeframe if isinstance(timeframe, Timeframe) else parse_timeframe(timeframe)
    if tf.intraday:
        return float(math.ceil(session_minutes / tf.count))
    return 1.0 / tf.count if tf.unit == "D" else float("nan")


def bars_per_year(
    timeframe: str | Timeframe, *, session_minutes: float, sessions_per_year: float
) -> float:
    """Annualisation factor of per-bar returns (module docstring): sessions a year times bars
    a session; ``<N>W`` bars: 52 / N."""
    tf = timeframe if isinstance(timeframe, Timeframe) else parse_timeframe(timeframe)
    if tf.unit == "W":
        return WEEKS_PER_YEAR / tf.count
    if tf.unit == "D":
        return sessions_per_year / tf.count
    return sessions_per_year * bars_per_session(tf, session_minutes)


def sessions_to_bars(sessions: int, timeframe: str | Timeframe, session_minutes: float) -> int:
    """Bars that ``sessions`` sessions hold (walk-forward folds and windows given in sessions)."""
    tf = timeframe if isinstance(timeframe, Timeframe) else parse_timeframe(timeframe)
    if tf.intraday:
        return int(sessions * bars_per_session(tf, session_minutes))
    return max(1, math.ceil(sessions / sessions_per_bar(tf)))
