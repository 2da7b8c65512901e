"""Synthetic task family with a known best policy: AR(1) log returns.

Each task is one regime ``RegimeParams(phi, sigma, drift)``; bar log returns follow

    r_t = drift + phi * (r_{t-1} - drift) + sigma * eps_t,   eps_t ~ N(0, 1)

so phi > 0 trends (momentum) and phi < 0 mean-reverts. Bars are built gap-free,
``open[t+1] == close[t]``, hence a position decided at the close of bar t and filled at
``open[t+1]`` earns exactly ``r_{t+1} = log(close[t+1] / close[t])`` whose conditional mean
is ``drift + phi * (r_t - drift)``. ``oracle_positions`` takes its sign.

Files are written in the format the ``DataLoader`` reads (``<INSTRUMENT>_<MINUTES>.parquet``
or ``.csv``), with a ``synthetic_params.json`` sidecar mapping each file stem to its regime
and an ``instruments.yaml`` describing their market (``SYNTHETIC_MARKET``: the NSE's session
hours on every weekday, no holidays, the origin's costs).
Instrument names encode the regime, e.g. ``Syn003_p030`` (phi = +0.30) or ``Syn004_m045``
(phi = -0.45), so ``Syn003_p030_5.parquet`` is task ``("Syn003_p030", "5")``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import yaml

from metatrade.data.instruments import INSTRUMENTS_FILE, Instrument, build_instrument
from metatrade.data.naming import parse_task_name
from metatrade.data.task_arrays import TaskId
from metatrade.io import atomic_write_text

PARAMS_FILE = "synthetic_params.json"
SESSION_OPEN_MIN = 9 * 60 + 15  # 09:15 IST
SESSION_MINUTES = 375  # 09:15 .. 15:30
SYNTHETIC_MARKET = {
    "calendar": {"open": "09:15", "close": "15:30"},
    "timezone": "Asia/Kolkata",
    "currency": "INR",
    "costs": "origin",
}
"""the market ``session_timestamps`` writes bars for, as an instruments.yaml description"""


def write_synthetic_market(folder: Path) -> None:
    """``instruments.yaml`` in ``folder``: every instrument trades ``SYNTHETIC_MARKET`` (the
    session hours ``session_timestamps`` writes bars in)."""
    header = "# Synthetic tasks (metatrade.data.synthetic): NSE session hours, no holidays.\n"
    market = yaml.safe_dump({"default": SYNTHETIC_MARKET}, sort_keys=False)
    atomic_write_text(folder / INSTRUMENTS_FILE, header + market)


def synthetic_instrument(name: str) -> Instrument:
    """The ``Instrument`` of a synthetic task (``SYNTHETIC_MARKET``), for arrays built from
    ``generate_bars`` without a folder."""
    return build_instrument(name, SYNTHETIC_MARKET, where="synthetic family", tables={})


class OracleRule(Protocol):
    """A synthetic task's true rule, as the meta-test protocol scores against it
    (``RegimeParams`` here, ``metatrade.data.regimes.TaskRule`` for the regime family)."""

    @property
    def kind(self) -> str:
        """The kind of structure ("ar", "seasonal", ..., "noise"): rows report by kind."""
        ...

    def positions(self, arrays: Any, *, threshold: float = 0.0) -> np.ndarray:
        """The oracle's target position per bar of a ``TaskArrays``, int8 [N] in {-1, 0, 1}."""
        ...


@dataclass(frozen=True)
class RegimeParams:
    """One AR(1) regime: ``phi`` autocorrelation of bar log returns, ``sigma`` their innovation
    std, ``drift`` their mean (per bar)."""

    phi: float
    sigma: float = 1e-3
    drift: float = 0.0

    def __post_init__(self) -> None:
        if not -1.0 < self.phi < 1.0:
            raise ValueError(
                f"RegimeParams phi={self.phi} must be in (-1, 1) for a stationary AR(1)"
            )
        if self.sigma <= 0:
            raise ValueError(f"RegimeParams sigma={self.sigma} must be > 0")

    @property
    def kind(self) -> str:
        """AR(1) tasks are of the regime family's kind "ar" (``OracleRule``)."""
        return "ar"

    def positions(self, arrays: Any, *, threshold: float = 0.0) -> np.ndarray:
        """``oracle_positions`` of a ``TaskArrays`` (``OracleRule``)."""
        return oracle_positions(arrays.close, self, threshold)


def session_timestamps(
    n_bars: int, bar_minutes: int, start: str = "2024-01-01"
) -> pd.DatetimeIndex:
    """``n_bars`` bar start times in 09:15-15:30 Asia/Kolkata sessions on weekdays.

    Each session has ceil(375 / bar_minutes) bars starting at 09:15 (as the real data has,
    e.g. the 45-minute bars start at 09:15, 10:00, ..., 15:15)."""
    per_day = -(-SESSION_MINUTES // bar_minutes)
    days = pd.bdate_range(start, periods=-(-n_bars // per_day))
    offsets = SESSION_OPEN_MIN + bar_minutes * np.arange(per_day)
    naive = (days.values[:, None] + offsets[None, :].astype("timedelta64[m]")).ravel()[:n_bars]
    return pd.DatetimeIndex(naive).tz_localize("Asia/Kolkata")


def generate_bars(
    params: RegimeParams,
    n_bars: int,
    rng: np.random.Generator | int,
    *,
    bar_minutes: int = 5,
    start_price: float | None = None,
    start: str = "2024-01-01",
) -> pd.DataFrame:
    """OHLCV bars of one regime: tz-aware index, open/high/low/close/volume (volume 0).

    ``open[t+1] == close[t]``; high/low add a half-normal wick of scale sigma/2 outside the
    body so bars look like bars without changing the close-to-close returns."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    price0 = float(gen.uniform(10_000, 40_000)) if start_price is None else float(start_price)
    eps = gen.standard_normal(n_bars)
    r = np.empty(n_bars)
    prev = params.drift
    for t in range(n_bars):  # the AR recursion; n_bars ~ 1e4, a loop is fine here
        prev = params.drift + params.phi * (prev - params.drift) + params.sigma * eps[t]
        r[t] = prev
    close = price0 * np.exp(np.cumsum(r))
    open_ = np.empty(n_bars)
    open_[0] = price0
    open_[1:] = close[:-1]
    wick_up = np.exp(np.abs(gen.standard_normal(n_bars)) * params.sigma / 2)
    wick_dn = np.exp(-np.abs(gen.standard_normal(n_bars)) * params.sigma / 2)
    high = np.maximum(open_, close) * wick_up
    low = np.minimum(open_, close) * wick_dn
    index = session_timestamps(n_bars, bar_minutes, start)
    index.name = "datetime"
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": 0.0}, index=index
    )


def oracle_positions(close: np.ndarray, params: RegimeParams, threshold: float = 0.0) -> np.ndarray:
    """Target position per bar, int8 [N] in {-1, 0, +1}: the sign of the expected next return
    E[r_{t+1} | r_t] = drift + phi * (r_t - drift), or 0 when its size is <= ``threshold``
    (set it to the round-trip cost as a fraction of price so trades cover costs).

    Position[t] is held from open[t+1] to close[t+1]; bar 0 uses r_0 = drift (unknown past)."""
    c = np.asarray(close, dtype=np.float64)
    r = np.full(len(c), params.drift)
    r[1:] = np.diff(np.log(c))
    expected = params.drift + params.phi * (r - params.drift)
    pos = np.sign(expected) * (np.abs(expected) > threshold)
    return pos.astype(np.int8)


def _instrument_name(i: int, phi: float) -> str:
    return f"Syn{i:03d}_{'p' if phi >= 0 else 'm'}{round(abs(phi) * 100):03d}"


def write_synthetic_tasks(
    folder: str | Path,
    n_tasks: int,
    seed: int,
    phi_range: tuple[float, float] = (-0.5, 0.5),
    sigma_range: tuple[float, float] = (5e-4, 2e-3),
    drift_range: tuple[float, float] = (0.0, 0.0),
    *,
    n_bars: int = 5_000,
    timeframes: tuple[str, ...] = ("5",),
    fmt: str = "parquet",
) -> dict[TaskId, RegimeParams]:
    """Write ``n_tasks`` regimes as data files + ``synthetic_params.json`` into ``folder``.

    Regime parameters are uniform in the given ranges; task i uses timeframe
    ``timeframes[i % len(timeframes)]``. Deterministic for ``seed``. Returns {task: params}."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt={fmt!r}; use 'parquet' or 'csv'")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    tasks: dict[TaskId, RegimeParams] = {}
    sidecar: dict[str, dict] = {}
    for i in range(n_tasks):
        params = RegimeParams(
            phi=float(gen.uniform(*phi_range)),
            sigma=float(gen.uniform(*sigma_range)),
            drift=float(gen.uniform(*drift_range)),
        )
        tf = str(timeframes[i % len(timeframes)])
        bars = generate_bars(params, n_bars, gen, bar_minutes=int(tf))
        stem = f"{_instrument_name(i, params.phi)}_{tf}"
        write_bar_file(bars, out, stem, fmt=fmt)
        tasks[parse_task_name(f"{stem}.{fmt}")] = params
        sidecar[stem] = {**asdict(params), "bar_minutes": int(tf), "n_bars": n_bars}
    write_synthetic_market(out)
    # The sidecar is written last and atomically: its presence marks a complete folder.
    atomic_write_text(out / PARAMS_FILE, json.dumps({"seed": seed, "tasks": sidecar}, indent=2))
    return tasks


def load_synthetic_params(folder: str | Path) -> dict[TaskId, OracleRule]:
    """True rules of a folder written by ``write_synthetic_tasks`` (``RegimeParams``) or by
    ``metatrade.data.regimes.write_regime_tasks`` (``TaskRule``), from its JSON sidecar."""
    path = Path(folder) / PARAMS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no synthetic parameters; write the folder with write_synthetic_tasks"
        )
    doc = json.loads(path.read_text())
    if "family" in doc:
        from metatrade.data.regimes import load_task_rules

        return dict(load_task_rules(folder))
    out: dict[TaskId, OracleRule] = {}
    for stem, p in doc["tasks"].items():
        task = parse_task_name(f"{stem}.parquet")
        out[task] = RegimeParams(phi=p["phi"], sigma=p["sigma"], drift=p["drift"])
    return out


def write_bar_file(bars: pd.DataFrame, folder: Path, stem: str, *, fmt: str) -> None:
    """One generated task's bars as ``<folder>/<stem>.<fmt>``: parquet, or CSV stamped in
    epoch seconds like the real broker files, with repr-exact floats."""
    if fmt == "parquet":
        bars.to_parquet(folder / f"{stem}.parquet")
        return
    flat = bars.reset_index()
    flat["datetime"] = bars.index.as_unit("s").asi8
    flat.to_csv(folder / f"{stem}.csv", index=False, float_format="%.17g")
