"""Market descriptions for test data with made-up instrument names (the loader refuses an
instrument it has no description of, rather than assuming the NSE)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from metatrade.data.instruments import INSTRUMENTS_FILE, Market
from metatrade.data.synthetic import synthetic_instrument

NSE_HOURS = {"calendar": "NSE", "currency": "INR", "costs": "origin"}
"""an NSE-listed instrument with the origin's costs (the data of the validation tests)"""


def describe_instruments(
    folder: Path, default: dict[str, Any] | None = None, **instruments: dict[str, Any]
) -> Path:
    """Write ``folder/instruments.yaml``: ``default`` for every instrument (NSE_HOURS when
    not given) and any named ``instruments``."""
    doc: dict[str, Any] = {"default": dict(default or NSE_HOURS)}
    if instruments:
        doc["instruments"] = instruments
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / INSTRUMENTS_FILE
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def synthetic_market(name: str, timeframe: str, session_minutes: float) -> Market:
    """The synthetic family's market (``SYNTHETIC_MARKET``) for hand-made arrays."""
    return Market(synthetic_instrument(name), str(timeframe), float(session_minutes))


# ---- small markets outside India: the acceptance data of issue #20 -------------------------
def _walk(n: int, seed: int, start: float, vol: float) -> dict[str, np.ndarray]:
    """OHLC of a geometric random walk with small wicks (open = previous close)."""
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(1e-4, vol, n)))
    open_ = np.concatenate([[start], close[:-1]])
    wick = np.abs(rng.normal(0.0, vol / 2, n))
    high = np.maximum(open_, close) * np.exp(wick)
    low = np.minimum(open_, close) * np.exp(-wick)
    return {"open": open_, "high": high, "low": low, "close": close}


def _xnys(start: str, end: str):
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange_calendars' use of deprecated pandas API
        warnings.simplefilter("ignore")
        return xcals.get_calendar("XNYS", start=start, end=end)


def write_us_daily(folder: Path, name: str = "SPX", n: int = 420, seed: int = 0) -> Path:
    """Daily bars on XNYS sessions from 2022-01-03, dated like a vendor's daily file
    (``YYYY-MM-DD``, read at midnight New York)."""
    days = _xnys("2022-01-03", "2024-12-31").sessions[:n]
    frame = pd.DataFrame({"datetime": days.strftime("%Y-%m-%d"), **_walk(n, seed, 4500.0, 0.01)})
    path = folder / f"{name}_1D.csv"
    frame.to_csv(path, index=False)
    return path


def fx_hours(n: int, start: str = "2024-01-07 22:00") -> pd.DatetimeIndex:
    """``n`` hourly bar starts (UTC) of the FX week: Sunday 17:00 to Friday 17:00 New York."""
    hours = pd.date_range(start, periods=n * 2, freq="h", tz="UTC")
    ny = hours.tz_convert("America/New_York")
    day, hour = ny.day_of_week, ny.hour
    open_ = (day < 4) | ((day == 6) & (hour >= 17)) | ((day == 4) & (hour < 17))
    return hours[open_][:n]


def write_fx_hourly(folder: Path, name: str = "EURUSD", n: int = 1500, seed: int = 1) -> Path:
    """Hourly bars of a currency pair over the FX week, as epoch seconds (UTC)."""
    hours = fx_hours(n)
    frame = pd.DataFrame({"datetime": hours.as_unit("s").asi8, **_walk(n, seed, 1.10, 1e-3)})
    path = folder / f"{name}_60.csv"
    frame.to_csv(path, index=False)
    return path


def us_session_bars(minutes: int, start: str, end: str) -> pd.DatetimeIndex:
    """Bar starts every ``minutes`` inside each XNYS session (09:30-16:00 New York, early
    closes respected) between two dates, in UTC."""
    sched = _xnys(start, end).schedule
    out = [
        pd.date_range(o, c, freq=f"{minutes}min", inclusive="left")
        for o, c in zip(sched["open"], sched["close"], strict=True)
    ]
    return out[0].append(out[1:])


def write_us_intraday(folder: Path, name: str = "USIDX", minutes: int = 30, seed: int = 2):
    """``minutes`` bars of a US index from 2024-01-02 to 2024-05-31 (across the March
    daylight-saving change), as ISO strings with their UTC offset."""
    stamps = us_session_bars(minutes, "2024-01-02", "2024-05-31")
    frame = pd.DataFrame(
        {
            "datetime": stamps.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **_walk(len(stamps), seed, 17000.0, 2e-3),
        }
    )
    path = folder / f"{name}_{minutes}.csv"
    frame.to_csv(path, index=False)
    return path


US_FX_INSTRUMENTS = {
    "SPX": {"calendar": "XNYS", "currency": "USD", "costs": "zero"},
    "USIDX": {"calendar": "XNYS", "currency": "USD", "costs": "zero"},
    "EURUSD": {"calendar": "24/5", "currency": "USD", "costs": "zero"},
}
"""instruments.yaml of the US and FX acceptance data (zero costs: buy-and-hold's figures are
the price path's own)"""


def write_us_fx_folder(folder: Path) -> Path:
    """US daily (SPX:1D), US 30-minute (USIDX:30) and FX hourly (EURUSD:60) tasks with the
    instruments.yaml that describes them."""
    folder.mkdir(parents=True, exist_ok=True)
    write_us_daily(folder)
    write_fx_hourly(folder)
    write_us_intraday(folder)
    doc = {"instruments": US_FX_INSTRUMENTS}
    (folder / INSTRUMENTS_FILE).write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder
