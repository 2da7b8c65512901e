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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metatrade.data.naming import data_files, parse_task_name
from metatrade.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
_DATETIME_ALIASES = ("datetime", "date", "timestamp", "time")
_MAX_ROWS_PER_KIND = 20  # beyond this, one summary problem per (file, kind)
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")  # no intraday index data this old
GAP_WEEKDAYS = 3  # more weekdays than this without a bar inside a task: a warning


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file; ``row``/``field`` are None when it concerns the whole file.

    ``level`` is "error" (the file cannot be used) or "warning" (usable, but look at it)."""

    file: str
    message: str
    row: int | None = None
    field: str | None = None
    line: int | None = None
    level: str = "error"

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
            if self.line is not None:
                where += f" (line {self.line})"
        if self.field is not None:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


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


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        df = pd.read_parquet(path)
        if isinstance(df.index, pd.DatetimeIndex):
            df = df.reset_index(names="datetime")
    else:
        df = pd.read_csv(path)
    first = str(df.columns[0]) if len(df.columns) else ""
    if first == "" or first.startswith("Unnamed"):
        df = df.drop(columns=df.columns[0])  # the broker's row counter, or a saved pandas index
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df


def utc_index(ns: np.ndarray, tz: str) -> pd.DatetimeIndex:
    """int64 ns since the epoch (UTC) -> tz-aware index (fast path, no object parsing)."""
    return (
        pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("M8[ns]"))
        .tz_localize("UTC")
        .tz_convert(tz)
    )


class _Collector:
    """Gathers problems, listing at most ``_MAX_ROWS_PER_KIND`` rows per kind then summarising."""

    def __init__(self, file: str, is_csv: bool):
        self.file, self.is_csv = file, is_csv
        self.problems: list[Problem] = []

    def whole(self, message: str, field: str | None = None, level: str = "error") -> None:
        self.problems.append(Problem(self.file, message, field=field, level=level))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    def rows(self, rows: np.ndarray, field: str, message_of) -> None:
        """``rows``: 1-based file rows; ``message_of(i)`` builds the message for the i-th."""
        for i, row in enumerate(rows[:_MAX_ROWS_PER_KIND]):
            line = int(row) + 1 if self.is_csv else None
            self.problems.append(Problem(self.file, message_of(i), int(row), field, line))
        if len(rows) > _MAX_ROWS_PER_KIND:
            extra = len(rows) - _MAX_ROWS_PER_KIND
            self.problems.append(
                Problem(
                    self.file, f"... and {extra} more row(s) with the same problem", None, field
                )
            )


def _parse_datetime(col: pd.Series, tz: str) -> pd.Series:
    """UTC nanoseconds as float (NaN where unparsable)."""
    if pd.api.types.is_datetime64_any_dtype(col):
        ts = col if col.dt.tz is not None else col.dt.tz_localize(tz)
        out = ts.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").astype("float64")
        return out.where(col.notna())
    num = pd.to_numeric(col, errors="coerce")
    # Mostly numbers: epoch times (the odd non-number is then reported as unparsable).
    if num.notna().any() and num.notna().sum() * 2 >= col.notna().sum():
        num = num.astype("float64")
        mag = float(np.nanmedian(np.abs(num.to_numpy())))
        # epoch seconds ~1.7e9; ms ~1.7e12; us ~1.7e15; ns ~1.7e18
        scale = 1e9 if mag < 1e11 else 1e6 if mag < 1e14 else 1e3 if mag < 1e17 else 1.0
        return num * scale
    text = col.astype("string")
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    has_offset = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False)
    naive = pd.to_datetime(text.where(~has_offset), errors="coerce", format="ISO8601")
    if naive.notna().any():
        naive_utc = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert(
            "UTC"
        )
        parsed = parsed.where(has_offset, naive_utc)
    out = pd.Series(np.nan, index=col.index)
    ok = parsed.notna()
    out[ok] = parsed[ok].dt.as_unit("ns").astype("int64").astype("float64")
    return out


def check_file(
    path: str | Path, tz: str = "Asia/Kolkata"
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read and check one file.

    Returns ``(bars, problems)``: ``bars`` is the clean frame (tz-aware sorted index, float64
    columns open/high/low/close/volume, exact duplicates dropped) when ``problems`` is empty,
    else None. Never raises for bad data.
    """
    path = Path(path)
    out = _Collector(path.name, path.suffix.lower() == ".csv")
    try:
        parse_task_name(path)
    except ValueError as err:
        out.whole(str(err).split(": ", 1)[1])
    try:
        raw = _read_table(path)
    except pd.errors.EmptyDataError:
        out.whole("file is empty; it needs a header datetime,open,high,low,close[,volume] and bars")
        return None, out.problems
    except Exception as err:  # unreadable: binary junk, bad Parquet, permissions, ...
        out.whole(f"cannot read file ({type(err).__name__}: {err}); save it as CSV or Parquet")
        return None, out.problems

    dt_name = next((c for c in _DATETIME_ALIASES if c in raw.columns), None)
    missing = [c for c in PRICE_COLUMNS if c not in raw.columns]
    if dt_name is None:
        missing.insert(0, "datetime")
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        out.whole(
            f"missing column(s) {names} (found {list(raw.columns)}); the header must contain "
            "datetime,open,high,low,close and optionally volume",
            field=",".join(missing),
        )
    if missing:
        return None, out.problems
    if len(raw) == 0:
        out.whole("file has a header but no bars; add data rows or remove the file")
        return None, out.problems

    rows = np.arange(1, len(raw) + 1)
    ts = _parse_datetime(raw[dt_name], tz).to_numpy()
    bad_ts = ~np.isfinite(ts)
    shown = raw[dt_name]
    bad_idx = np.flatnonzero(bad_ts)
    out.rows(
        rows[bad_ts],
        "datetime",
        lambda i: (
            f"cannot parse {str(shown.iloc[bad_idx[i]])!r} as a time; use Unix epoch seconds or "
            "ISO-8601 like 2024-03-18T09:15:00+05:30"
        ),
    )

    out_of_range = _check_time_range(out, rows, ts, shown)

    columns = [c for c in OHLCV_COLUMNS if c in raw.columns]
    values = np.empty((len(raw), len(columns)), dtype=np.float64)
    valid = ~bad_ts & ~out_of_range
    for j, col in enumerate(columns):
        orig = raw[col]
        num = pd.to_numeric(orig, errors="coerce").astype("float64").to_numpy()
        values[:, j] = num
        non_numeric = np.isnan(num) & orig.notna().to_numpy()
        idx = np.flatnonzero(non_numeric)
        out.rows(
            rows[non_numeric],
            col,
            lambda i, idx=idx, orig=orig: (
                f"non-numeric value {str(orig.iloc[idx[i]])!r}; write a plain number like 22450.5"
            ),
        )
        missing_v = np.isnan(num) & ~non_numeric
        out.rows(
            rows[missing_v], col, lambda i: "value is missing/NaN; fill in the bar or drop the row"
        )
        inf = np.isinf(num)
        out.rows(rows[inf], col, lambda i: "value is infinite; fix or drop the row")
        valid &= np.isfinite(num)
        if col in PRICE_COLUMNS:
            nonpos = np.isfinite(num) & (num <= 0)
            idx_np = np.flatnonzero(nonpos)
            out.rows(
                rows[nonpos],
                col,
                lambda i, idx=idx_np, num=num: (
                    f"price {num[idx[i]]:g} is not positive; prices "
                    "must be > 0 (fix the bar or drop the row)"
                ),
            )
            valid &= ~nonpos
        elif col == "volume":
            neg = np.isfinite(num) & (num < 0)
            out.rows(rows[neg], col, lambda i: "volume is negative; use 0 when there is none")

    o, h, lo, c = (values[:, columns.index(k)] for k in PRICE_COLUMNS)
    with np.errstate(invalid="ignore"):
        top, bottom = np.maximum(o, c), np.minimum(o, c)
        high_low = valid & (h < lo)
        high_bad = valid & (h < top) & ~high_low
        low_bad = valid & (lo > bottom) & ~high_low
    for mask, field, msg in (
        (high_low, "high", lambda k: f"high {h[k]:g} is below low {lo[k]:g}"),
        (high_bad, "high", lambda k: f"high {h[k]:g} is below max(open, close) = {top[k]:g}"),
        (low_bad, "low", lambda k: f"low {lo[k]:g} is above min(open, close) = {bottom[k]:g}"),
    ):
        idx = np.flatnonzero(mask)
        out.rows(
            rows[mask],
            field,
            lambda i, idx=idx, msg=msg: msg(idx[i]) + "; fix the bar so low <= open, close <= high",
        )
    valid &= ~(high_low | high_bad | low_bad)

    # Duplicated timestamps: identical rows are chunk overlaps (dropped); different values are
    # two versions of one bar and we cannot know which is right.
    vidx = np.flatnonzero(valid)
    order = vidx[np.lexsort((rows[vidx], ts[vidx]))]
    t_sorted, v_sorted = ts[order], values[order]
    same_t = t_sorted[1:] == t_sorted[:-1]
    same_v = np.all(v_sorted[1:] == v_sorted[:-1], axis=1)
    conflict = np.flatnonzero(same_t & ~same_v) + 1
    tz_fmt = utc_index(t_sorted[conflict].astype(np.int64), tz)
    out.rows(
        rows[order[conflict]],
        "datetime",
        lambda i: (
            f"timestamp {tz_fmt[i]} repeats row {rows[order[conflict[i] - 1]]} with "
            "different prices; keep only the correct bar"
        ),
    )
    if out.errors:
        return None, out.problems

    keep = np.concatenate([[True], ~same_t]) if len(order) else np.zeros(0, bool)
    order = order[keep]
    index = utc_index(ts[order].astype(np.int64), tz)
    bars = pd.DataFrame(values[order], index=index, columns=columns)
    if "volume" not in bars:
        bars["volume"] = 0.0
    bars.index.name = "datetime"
    _check_spacing(out, path, index)
    if out.errors:
        return None, out.problems
    for before, after, missing in session_gaps(index):
        out.whole(
            f"gap of {missing} weekdays without a bar between {before} and {after}; "
            "episodes across it see a jump the market never made (fill the missing "
            "sessions or split the file)",
            field="datetime",
            level="warning",
        )
    return bars[list(OHLCV_COLUMNS)], out.problems


def _check_time_range(
    out: _Collector, rows: np.ndarray, ts: np.ndarray, shown: pd.Series
) -> np.ndarray:
    """Rows whose time lands before 1990 or after tomorrow; the message guesses the unit
    mix-up (epoch milliseconds read as seconds lands ~50,000 years ahead, the reverse in
    January 1970). Returns the bool mask of those rows."""
    lo = EARLIEST.value
    hi = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)).value
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(ts) & ((ts < lo) | (ts > hi))
    idx = np.flatnonzero(bad)

    def message(i: int) -> str:
        t = ts[idx[i]]
        when = "before 1990" if t < lo else "in the future"
        hint = "check the date"
        for factor, unit in ((1e3, "1000x"), (1e6, "a million times")):
            if lo <= t * factor <= hi:
                hint = (
                    f"it is {unit} too small: epoch seconds where milliseconds are expected, "
                    "or a column mixing units"
                )
            elif lo <= t / factor <= hi:
                hint = (
                    f"it is {unit} too large: epoch milliseconds read as seconds, "
                    "or a column mixing units"
                )
        return (
            f"time {str(shown.iloc[idx[i]])!r} lands {when}; {hint}; write every row in "
            "one unit (epoch seconds) or as ISO-8601 like 2024-03-18T09:15:00+05:30"
        )

    out.rows(rows[bad], "datetime", message)
    return bad


def _check_spacing(out: _Collector, path: Path, index: pd.DatetimeIndex) -> None:
    """The usual spacing of bars within a day must be the minutes the file name says."""
    try:
        minutes = int(parse_task_name(path).timeframe)
    except ValueError:
        return  # reported already
    if len(index) < 3:
        return
    ns = index.asi8
    day = index.normalize().asi8
    same_day = day[1:] == day[:-1]
    gaps = (ns[1:] - ns[:-1])[same_day] // 60_000_000_000
    if len(gaps) < 2:
        return  # daily or coarser bars: nothing to compare within a day
    values, counts = np.unique(gaps, return_counts=True)
    usual = int(values[np.argmax(counts)])
    if usual != minutes:
        task = parse_task_name(path)
        out.whole(
            f"bars are usually {usual} minutes apart within a day, but the file name says "
            f"{minutes}; rename it {task.instrument}_{usual}{path.suffix} or resample the bars "
            f"to {minutes} minutes",
            field="datetime",
        )


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
