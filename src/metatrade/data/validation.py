"""Read one OHLCV file and check it; every problem names the file, row and field, and the fix.

Accepted input (CSV or Parquet):

- columns ``datetime, open, high, low, close`` and optionally ``volume`` (names are
  case-insensitive; ``date``/``timestamp``/``time`` are accepted for ``datetime``); an unnamed
  leading index column (the broker's row counter) is ignored;
- ``datetime`` as Unix epoch seconds (UTC; milli/micro/nanoseconds are recognised by size),
  ISO-8601 strings (naive strings are read in the loader's time zone), or a Parquet timestamp
  column / index;
- rows in any order; exact duplicate rows are dropped, conflicting ones are refused;
- timestamps between 1990 and tomorrow (outside: most often epoch milliseconds read as
  seconds or the reverse; the problem says which), bars spaced as the file name says,
  counted in the instrument's calendar (a 5-minute file named ``_15`` is refused, and so
  are daily bars named ``_5``: ``<INSTRUMENT>_1D``), trading days on the calendar's sessions.

Every file is read against its instrument's description (``metatrade.data.instruments``):
naive timestamps are read in its time zone, and sessions come from its calendar. A gap of
more than ``GAP_SESSIONS`` scheduled sessions without a bar is a *warning*
(``Problem.level``; a holiday is not a scheduled session): the data can be used, but an
episode spanning the gap sees a jump the market never made. So are bars on a few days the
calendar lists as closed (special sessions, kept as their own trading day).

Row numbers are 1-based data rows as stored in the file (for CSV, ``line = row + 1`` because
of the header), counted before any sorting, so a user can find the bar in an editor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metatrade.data.calendar import (
    GAP_SESSIONS,
    assign_sessions,
    missing_sessions,
    sessions_per_bar,
)
from metatrade.data.checks import (
    DATETIME_ALIASES,
    EARLIEST,
    OHLCV_COLUMNS,
    PRICE_COLUMNS,
    Collector,
    Problem,
    check_duplicates,
    check_ohlc,
    check_times,
    check_values,
    looks_like_timestamps,
    read_table,
    utc_index,
)
from metatrade.data.instruments import Instrument, InstrumentRegistry
from metatrade.data.naming import data_files, parse_task_name, parse_timeframe
from metatrade.data.session_checks import check_closed_days, check_daily_stamps, check_spacing
from metatrade.errors import DataError

__all__ = [
    "EARLIEST",
    "GAP_SESSIONS",
    "OHLCV_COLUMNS",
    "PRICE_COLUMNS",
    "DataValidationError",
    "Problem",
    "check_file",
    "load_bars",
    "session_gaps",
    "too_short",
    "utc_index",
    "validate_folder",
]


class DataValidationError(DataError):
    """Bad input data. ``problems`` lists everything found; the message shows the first few."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(file="<data>", message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = [p for p in problems if p.level == "error"] or list(problems)
        shown = "\n  ".join(str(p) for p in self.problems[:10])
        more = len(self.problems) - 10
        tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
        super().__init__(f"{len(self.problems)} data problem(s):\n  {shown}{tail}")


def _read_checked(path: Path, out: Collector) -> tuple[pd.DataFrame, str] | None:
    """The raw table and the name of its datetime column, or None (with the problem) when the
    file cannot be read, lacks a required column or has no rows."""
    try:
        parse_task_name(path)
    except ValueError as err:
        out.whole(str(err).split(": ", 1)[1])
    try:
        raw = read_table(path)
    except pd.errors.EmptyDataError:
        out.whole("file is empty; it needs a header datetime,open,high,low,close[,volume] and bars")
        return None
    except Exception as err:  # unreadable: binary junk, bad Parquet, permissions, ...
        out.whole(f"cannot read file ({type(err).__name__}: {err}); save it as CSV or Parquet")
        return None

    dt_name = next((c for c in DATETIME_ALIASES if c in raw.columns), None)
    missing = [c for c in PRICE_COLUMNS if c not in raw.columns]
    if dt_name is None:
        missing.insert(0, "datetime")
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        unnamed = raw.attrs.get("unnamed_first_column")
        hint = (
            "; the first column has no name but looks like timestamps (a pandas index saved "
            'without a label): write the file with df.to_csv(path, index_label="datetime")'
            if dt_name is None and unnamed is not None and looks_like_timestamps(unnamed)
            else ""
        )
        out.whole(
            f"missing column(s) {names} (found {list(raw.columns)}); the header must contain "
            f"datetime,open,high,low,close and optionally volume{hint}",
            field=",".join(missing),
        )
        return None
    if len(raw) == 0:
        out.whole("file has a header but no bars; add data rows or remove the file")
        return None
    assert dt_name is not None
    return raw, dt_name


def check_file(
    path: str | Path, instrument: Instrument | None = None
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read and check one file against its instrument (default: the description its folder
    gives its name, ``InstrumentRegistry``).

    Returns ``(bars, problems)``: ``bars`` is the clean frame (index in the instrument's
    time zone, sorted, float64 columns open/high/low/close/volume, exact duplicates
    dropped) when ``problems`` holds no error, else None. Never raises for bad data.
    """
    path = Path(path)
    out = Collector(path.name, path.suffix.lower() == ".csv")
    if instrument is None:
        instrument = _instrument_of(path, out)
    read = _read_checked(path, out)
    if read is None or instrument is None:
        return None, out.problems
    raw, dt_name = read
    tz = instrument.timezone
    rows = np.arange(1, len(raw) + 1)
    ts, valid = check_times(out, rows, raw[dt_name], tz)
    columns, values, valid = check_values(out, rows, raw, valid)
    valid = check_ohlc(out, rows, values, columns, valid)
    order = check_duplicates(out, rows, ts, values, valid, tz)
    if out.errors:
        return None, out.problems

    ns = ts[order].astype(np.int64)
    index = utc_index(ns, tz)
    bars = pd.DataFrame(values[order], index=index, columns=columns)
    if "volume" not in bars:
        bars["volume"] = 0.0
    bars.index.name = "datetime"
    _check_sessions(out, path, ns, instrument)
    if out.errors:
        return None, out.problems
    return bars[list(OHLCV_COLUMNS)], out.problems


def _check_sessions(out: Collector, path: Path, ns: np.ndarray, instrument: Instrument) -> None:
    """Spacing against the file name, closed days and gaps, in the instrument's sessions."""
    try:
        sessions = assign_sessions(ns, instrument.calendar, instrument.timezone)
    except DataError as err:
        out.whole(str(err), field="datetime")
        return
    check_spacing(out, path, ns, sessions)
    try:
        tf = parse_timeframe(parse_task_name(path).timeframe)
    except ValueError:
        return  # reported already
    cal = instrument.calendar
    if not tf.intraday:
        check_daily_stamps(out, ns, sessions, instrument.timezone)
    if out.errors:
        return
    if tf.unit != "W":  # a weekly bar's date labels a week: it need not be a session
        check_closed_days(out, sessions, cal.describe(), instrument.special_sessions)
    if out.errors:
        return
    gaps = missing_sessions(sessions.label, cal, ns[0], ns[-1], sessions_per_bar(tf))
    for before, after, missing in gaps:
        out.whole(
            f"gap of {missing} {cal.describe()} sessions without a bar between {before} and "
            f"{after} (the calendar's holidays are not counted): nothing is wrong if the "
            "exchange was closed anyway (a trading halt, an unscheduled closure; a warning "
            "only, the bars are used as they are); if bars are missing, get them from the "
            "data source (never invent bars) or split the file at the gap",
            field="datetime",
            level="warning",
        )


def _instrument_of(path: Path, out: Collector) -> Instrument | None:
    """The file's instrument from its folder's descriptions, or None with the problem."""
    try:
        task = parse_task_name(path)
    except ValueError:
        return None  # the name is reported by _read_checked
    try:
        return InstrumentRegistry(path.parent).get(task.instrument)
    except DataError as err:
        out.whole(str(err))
        return None


def session_gaps(
    index: pd.DatetimeIndex, instrument: Instrument, timeframe: str = "1"
) -> list[tuple[str, str, int]]:
    """``(last session before, first session after, scheduled sessions missing)`` for every
    gap of more than ``GAP_SESSIONS`` sessions of the instrument's calendar between
    consecutive traded sessions of ``index`` (bars of ``timeframe``)."""
    ns = np.asarray(index.as_unit("ns").asi8, dtype=np.int64)
    if len(ns) < 2:
        return []
    sessions = assign_sessions(ns, instrument.calendar, instrument.timezone)
    per_bar = sessions_per_bar(timeframe)
    return missing_sessions(sessions.label, instrument.calendar, ns[0], ns[-1], per_bar)


def load_bars(path: str | Path, instrument: Instrument | None = None) -> pd.DataFrame:
    """Clean bars of one file, or ``DataValidationError`` listing every problem."""
    bars, problems = check_file(path, instrument)
    if bars is None:
        raise DataValidationError(problems)
    assert bars is not None
    return bars


def validate_folder(
    path: str | Path,
    tz: str | None = None,
    lookback: int | None = None,
    instruments: dict | None = None,
) -> list[Problem]:
    """Every problem in every data file of a folder (or in one file); never raises for bad data.

    Files are read against their instruments' descriptions (the folder's ``instruments.yaml``,
    the embedded NSE names, ``instruments`` overrides); ``tz`` replaces every instrument's
    time zone. With ``lookback``, a file too short to give one observation of that many
    bars after the feature warm-up (and one step to trade) is a problem too.
    """
    p = Path(path)
    if not p.exists():
        return [
            Problem(str(p), "no such file or folder; pass a folder of <INSTRUMENT>_<MINUTES>.csv")
        ]
    files = [p] if p.is_file() else data_files(p)
    if not files:
        return [Problem(str(p), "no .csv or .parquet files found; add <INSTRUMENT>_<MINUTES>.csv")]
    try:
        registry = InstrumentRegistry(files[0].parent, overrides=instruments, timezone=tz)
    except DataError as err:
        return [Problem(str(p), str(err))]
    problems: list[Problem] = []
    seen: dict[object, str] = {}
    for f in files:
        try:
            task = parse_task_name(f)
        except ValueError:
            problems.extend(check_file(f)[1])  # reports the name
            continue
        if task in seen:
            problems.append(
                Problem(f.name, f"same task as {seen[task]}; keep only one of the two files")
            )
        seen[task] = f.name
        try:
            instrument = registry.get(task.instrument)
        except DataError as err:
            problems.append(Problem(f.name, str(err)))
            continue
        bars, found = check_file(f, instrument)
        problems.extend(found)
        if bars is not None and lookback is not None:
            short = too_short(len(bars), lookback)
            if short:
                problems.append(Problem(f.name, short))
    return problems


def too_short(num_bars: int, lookback: int) -> str | None:
    """Why ``num_bars`` bars cannot give one observation of ``lookback`` bars after the
    feature warm-up plus one step to trade (None if they can)."""
    from metatrade.data.features import feature_warmup_rows

    warmup = feature_warmup_rows()
    need = warmup + lookback + 1
    if num_bars >= need:
        return None
    return (
        f"too short: {num_bars} bars, but one observation needs {warmup} feature warm-up "
        f"bars + lookback {lookback} + 1 bar to trade = {need}; add history or remove the file"
    )
