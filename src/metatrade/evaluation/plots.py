"""The two pictures a reader checks first: an equity curve with its drawdown, and the
adaptation curve (held-out return against the number of inner steps, per starting point).

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly, never through
``pyplot``: no global state, no GUI backend, safe in tests and in worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metatrade.evaluation.metrics import drawdown_series
from metatrade.io import atomic_savefig

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def exchange_time_labels(timestamps: np.ndarray, tz: str) -> list[str]:
    """Bar times as 'YYYY-MM-DD HH:MM' in the exchange's time zone ``tz`` (the instrument's),
    the clock traders read; timestamps are stored in UTC."""
    ts = np.asarray(timestamps)
    ts = ts.astype("datetime64[ns]") if np.issubdtype(ts.dtype, np.integer) else ts
    return list(pd.DatetimeIndex(ts).tz_localize("UTC").tz_convert(tz).strftime("%Y-%m-%d %H:%M"))


def _time_ticks(ax: Any, timestamps: np.ndarray, n: int, tz: str, num_ticks: int = 8) -> None:
    """Label a bar-index axis with dates: intraday data plotted against wall time would
    draw every night and weekend as a long straight segment."""
    ts = np.asarray(timestamps)
    if len(ts) != n:
        raise ValueError(f"plot: {len(ts)} timestamps for {n} equity points; they must align")
    pos = np.unique(np.linspace(0, n - 1, min(num_ticks, n)).round().astype(int))
    ax.set_xticks(pos)
    ax.set_xticklabels(exchange_time_labels(ts[pos], tz))


def plot_equity_curve(
    path: str | Path,
    curves: Mapping[str, np.ndarray],
    timestamps: np.ndarray | None = None,
    *,
    title: str = "Equity curve",
    initial_capital: float | None = None,
    tz: str = "UTC",
) -> Path:
    """Equity curves (top) and their drawdowns in % (bottom), written atomically as PNG.

    Args:
        path: output file (.png).
        curves: label -> equity [N] (e.g. "default costs", "stressed (+2 bps/side)",
            "buy-and-hold"), all aligned with ``timestamps``.
        timestamps: int64 ns since the epoch (UTC) or datetime64 [N]; bar index when None.
        initial_capital: drawn as a dotted reference line.
        tz: time zone of the date labels (the instrument's).
    """
    if not curves:
        raise ValueError("plot_equity_curve: no curves given")
    fig = Figure(figsize=(10, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, (label, equity) in enumerate(curves.items()):
        equity = np.asarray(equity, dtype=np.float64)
        x = np.arange(len(equity))
        color = _COLORS[i % len(_COLORS)]
        ax_eq.plot(x, equity, color=color, lw=1.2, label=label)
        dd = -100.0 * drawdown_series(equity)[0]
        ax_dd.plot(x, dd, color=color, lw=0.9)
        if i == 0:
            ax_dd.fill_between(x, dd, 0.0, color=color, alpha=0.3, lw=0)
    if initial_capital is not None:
        ax_eq.axhline(initial_capital, color="grey", ls=":", lw=1, label="initial capital")
    ax_eq.set_title(title)
    ax_eq.set_ylabel("equity")
    ax_eq.grid(alpha=0.3)
    ax_eq.legend(loc="best", fontsize=8)
    ax_dd.set_ylabel("drawdown (%)")
    if timestamps is not None:
        _time_ticks(ax_dd, timestamps, len(next(iter(curves.values()))), tz)
    ax_dd.set_xlabel(f"bar (labels: bar time, {tz})" if timestamps is not None else "bar")
    ax_dd.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return atomic_savefig(fig, path)


@dataclass(frozen=True)
class CurveBand:
    """One line of the adaptation plot: estimates and CI bounds at each k."""

    ks: Sequence[int]
    estimate: Sequence[float]
    low: Sequence[float]
    high: Sequence[float]


def plot_adaptation_curve(
    path: str | Path,
    curves: Mapping[str, CurveBand],
    references: Mapping[str, tuple[float, float, float]] | None = None,
    *,
    ylabel: str = "held-out test return",
    title: str = "Adaptation on held-out tasks",
) -> Path:
    """Return vs inner steps k with shaded 95% CIs per start; references as flat bands.

    Args:
        curves: start label (e.g. "MAML") -> CurveBand over k.
        references: label (e.g. "buy-and-hold") -> (estimate, low, high), k-independent.
    """
    fig = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    all_ks: list[int] = []
    for i, (label, band) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)]
        ks = np.asarray(band.ks)
        all_ks.extend(ks.tolist())
        ax.plot(ks, band.estimate, marker="o", color=color, label=label)
        ax.fill_between(ks, band.low, band.high, color=color, alpha=0.2, lw=0)
    if references:
        lo_k, hi_k = (min(all_ks), max(all_ks)) if all_ks else (0, 1)
        for j, (label, (est, low, high)) in enumerate(references.items()):
            color = ("black", "grey", "tab:olive", "tab:cyan")[j % 4]
            ax.hlines(est, lo_k, hi_k, colors=color, linestyles="--", lw=1, label=label)
            ax.fill_between([lo_k, hi_k], [low, low], [high, high], color=color, alpha=0.08, lw=0)
    if all_ks:
        ax.set_xticks(sorted(set(all_ks)))
    ax.set_xlabel("inner policy-gradient steps k on the adaptation window")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n(shaded: 95% bootstrap CI over tasks and episodes)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return atomic_savefig(fig, path)
