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
  seconds or the reverse; the problem says which), bars spaced by the minutes the file name
  says (a 5-minute file named ``_15`` is refused).

Gaps of more than ``GAP_WEEKDAYS`` weekdays without a bar are *warnings* (``Problem.level``):
the data can be used, but an episode spanning the gap sees a jump the market never made.

Row numbers are 1-based data rows as stored in the file (for CSV, ``line = row + 1`` because
of the header), counted before any sorting, so a user can find the bar in an editor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metatrade.data.checks import (
    DATETIME_ALIASES,
    EARLIEST,
    OHLCV_COLUMNS,
    PRICE_COLUMNS,
    Collector,
    Problem,
    check_duplicates,
    check_ohlc,
    check_spacing,
    check_times,
    check_values,
    looks_like_timestamps,
    read_table,
    utc_index,
)
from metatrade.data.naming import data_files, parse_task_name
from metatrade.errors import DataError

__all__ = [
    "EARLIEST",
    "GAP_WEEKDAYS",
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

GAP_WEEKDAYS = 3  # more weekdays than this without a bar inside a task: a warning


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
    path: str | Path, tz: str = "Asia/Kolkata"
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read and check one file.

    Returns ``(bars, problems)``: ``bars`` is the clean frame (tz-aware sorted index, float64
    columns open/high/low/close/volume, exact duplicates dropped) when ``problems`` is empty,
    else None. Never raises for bad data.
    """
    path = Path(path)
    out = Collector(path.name, path.suffix.lower() == ".csv")
    read = _read_checked(path, out)
    if read is None:
        return None, out.problems
    raw, dt_name = read
    rows = np.arange(1, len(raw) + 1)
    ts, valid = check_times(out, rows, raw[dt_name], tz)
    columns, values, valid = check_values(out, rows, raw, valid)
    valid = check_ohlc(out, rows, values, columns, valid)
    order = check_duplicates(out, rows, ts, values, valid, tz)
    if out.errors:
        return None, out.problems

    index = utc_index(ts[order].astype(np.int64), tz)
    bars = pd.DataFrame(values[order], index=index, columns=columns)
    if "volume" not in bars:
        bars["volume"] = 0.0
    bars.index.name = "datetime"
    check_spacing(out, path, index)
    if out.errors:
        return None, out.problems
    for before, after, missing in session_gaps(index):
        out.whole(
            f"gap of {missing} weekdays without a bar between {before} and {after}: nothing "
            "is wrong if the exchange was closed (holidays, a trading halt; a warning only, "
            "the bars are used as they are); if bars are missing, get them from the data "
            "source (never invent bars) or split the file at the gap",
            field="datetime",
            level="warning",
        )
    return bars[list(OHLCV_COLUMNS)], out.problems


def session_gaps(index: pd.DatetimeIndex) -> list[tuple[str, str, int]]:
    """``(last date before, first date after, weekdays missing)`` for every gap of more than
    ``GAP_WEEKDAYS`` weekdays between consecutive trading days of ``index``."""
    days = np.unique(index.normalize().tz_localize(None).values.astype("datetime64[D]"))
    if len(days) < 2:
        return []
    missing = np.busday_count(days[:-1] + 1, days[1:])
    return [
        (str(days[i]), str(days[i + 1]), int(missing[i]))
        for i in np.flatnonzero(missing > GAP_WEEKDAYS)
    ]


def load_bars(path: str | Path, tz: str = "Asia/Kolkata") -> pd.DataFrame:
    """Clean bars of one file, or ``DataValidationError`` listing every problem."""
    bars, problems = check_file(path, tz)
    if bars is None:
        raise DataValidationError(problems)
    assert bars is not None
    return bars


def validate_folder(
    path: str | Path, tz: str = "Asia/Kolkata", lookback: int | None = None
) -> list[Problem]:
    """Every problem in every data file of a folder (or in one file); never raises for bad data.

    With ``lookback``, a file too short to give one observation of that many bars after the
    feature warm-up (and one step to trade) is a problem too.
    """
    p = Path(path)
    if not p.exists():
        return [
            Problem(str(p), "no such file or folder; pass a folder of <INSTRUMENT>_<MINUTES>.csv")
        ]
    files = [p] if p.is_file() else data_files(p)
    if not files:
        return [Problem(str(p), "no .csv or .parquet files found; add <INSTRUMENT>_<MINUTES>.csv")]
    problems: list[Problem] = []
    seen: dict[object, str] = {}
    for f in files:
        try:
            task = parse_task_name(f)
            if task in seen:
                problems.append(
                    Problem(f.name, f"same task as {seen[task]}; keep only one of the two files")
                )
            seen[task] = f.name
        except ValueError:
            pass  # reported by check_file
        bars, found = check_file(f, tz)
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
