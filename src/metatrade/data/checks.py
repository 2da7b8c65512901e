"""Row-level checks behind ``validation.check_file``: each adds ``Problem``s naming file, row,
field and the fix, and returns the mask of rows still usable (see ``validation`` for the rules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
DATETIME_ALIASES = ("datetime", "date", "timestamp", "time")
_MAX_ROWS_PER_KIND = 20  # beyond this, one summary problem per (file, kind)
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")  # no intraday index data this old


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


def read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        df = pd.read_parquet(path)
        if isinstance(df.index, pd.DatetimeIndex):
            df = df.reset_index(names="datetime")
    else:
        df = pd.read_csv(path)
    first = str(df.columns[0]) if len(df.columns) else ""
    if first == "" or first.startswith("Unnamed"):
        dropped = df[df.columns[0]]
        df = df.drop(columns=df.columns[0])  # the broker's row counter, or a saved pandas index
        df.attrs["unnamed_first_column"] = dropped.head(20)  # for the missing-datetime hint
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df


def looks_like_timestamps(values: pd.Series) -> bool:
    """Whether text values parse as date-times (a pandas index saved without a label)."""
    text = values.dropna().astype(str)
    if text.empty or text.str.fullmatch(r"\d+").all():  # a row counter, not times
        return False
    return bool(pd.to_datetime(text, errors="coerce", format="mixed").notna().all())


def utc_index(ns: np.ndarray, tz: str) -> pd.DatetimeIndex:
    """int64 ns since the epoch (UTC) -> tz-aware index (fast path, no object parsing)."""
    return (
        pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("M8[ns]"))
        .tz_localize("UTC")
        .tz_convert(tz)
    )


class Collector:
    """Gathers problems, listing at most ``_MAX_ROWS_PER_KIND`` rows per kind then summarising."""

    def __init__(self, file: str, is_csv: bool):
        self.file, self.is_csv = file, is_csv
        self.problems: list[Problem] = []

    def whole(self, message: str, field: str | None = None, level: str = "error") -> None:
        self.problems.append(Problem(self.file, message, field=field, level=level))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    def masked(self, rows: np.ndarray, mask: np.ndarray, field: str, shown, message) -> None:
        """Report ``rows[mask]``; ``message(value)`` gets each reported row's ``shown[k]``."""
        idx = np.flatnonzero(mask)
        self.rows(rows[mask], field, lambda i: message(shown[idx[i]]))

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


def parse_datetime(col: pd.Series, tz: str) -> pd.Series:
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


def check_time_range(
    out: Collector, rows: np.ndarray, ts: np.ndarray, shown: pd.Series
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


def check_times(
    out: Collector, rows: np.ndarray, shown: pd.Series, tz: str
) -> tuple[np.ndarray, np.ndarray]:
    """Parse the datetime column; returns ``(UTC ns as float, mask of rows with a usable time)``."""
    ts = parse_datetime(shown, tz).to_numpy()
    bad_ts = ~np.isfinite(ts)
    out.masked(
        rows,
        bad_ts,
        "datetime",
        shown.iloc,
        lambda v: (
            f"cannot parse {str(v)!r} as a time; use Unix epoch seconds or "
            "ISO-8601 like 2024-03-18T09:15:00+05:30"
        ),
    )
    out_of_range = check_time_range(out, rows, ts, shown)
    return ts, ~bad_ts & ~out_of_range


def check_column(out: Collector, rows: np.ndarray, col: str, orig: pd.Series) -> np.ndarray:
    """One OHLCV column as float64 (NaN where unusable), with its problems reported."""
    num = pd.to_numeric(orig, errors="coerce").astype("float64").to_numpy()
    non_numeric = np.isnan(num) & orig.notna().to_numpy()
    out.masked(
        rows,
        non_numeric,
        col,
        orig.iloc,
        lambda v: f"non-numeric value {str(v)!r}; write a plain number like 22450.5",
    )
    missing_v = np.isnan(num) & ~non_numeric
    out.rows(
        rows[missing_v], col, lambda i: "value is missing/NaN; fill in the bar or drop the row"
    )
    inf = np.isinf(num)
    out.rows(rows[inf], col, lambda i: "value is infinite; fix or drop the row")
    return num


def check_values(
    out: Collector, rows: np.ndarray, raw: pd.DataFrame, valid: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every OHLCV column present: ``(columns, float64 values [rows, columns], valid mask)``."""
    columns = [c for c in OHLCV_COLUMNS if c in raw.columns]
    values = np.empty((len(raw), len(columns)), dtype=np.float64)
    valid = valid.copy()
    for j, col in enumerate(columns):
        num = check_column(out, rows, col, raw[col])
        values[:, j] = num
        valid &= np.isfinite(num)
        if col in PRICE_COLUMNS:
            nonpos = np.isfinite(num) & (num <= 0)
            out.masked(
                rows,
                nonpos,
                col,
                num,
                lambda v: (
                    f"price {v:g} is not positive; prices must be > 0 (fix the bar or drop the row)"
                ),
            )
            valid &= ~nonpos
        elif col == "volume":
            neg = np.isfinite(num) & (num < 0)
            out.rows(rows[neg], col, lambda i: "volume is negative; use 0 when there is none")
    return columns, values, valid


def check_ohlc(
    out: Collector, rows: np.ndarray, values: np.ndarray, columns: list[str], valid: np.ndarray
) -> np.ndarray:
    """Bars must satisfy low <= open, close <= high; returns ``valid`` less the bars that do not."""
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
    return valid & ~(high_low | high_bad | low_bad)


def check_duplicates(
    out: Collector, rows: np.ndarray, ts: np.ndarray, values: np.ndarray, valid: np.ndarray, tz: str
) -> np.ndarray:
    """Valid rows in time order, one per timestamp. Identical rows are chunk overlaps (dropped);
    different values are two versions of one bar and we cannot know which is right (a problem)."""
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
    keep = np.concatenate([[True], ~same_t]) if len(order) else np.zeros(0, bool)
    return order[keep]
