"""The backtest report traders read: an aligned text block, the trade list, the equity plot.

``format_backtest_report`` prints every metric of ``metatrade.evaluation.metrics`` for each
cost scenario side by side (default costs and +2 bps per side), the headline lines first in a
fixed order. ``backtest_and_report`` runs both backtests and writes the files of a report
folder, every file atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.backtest import (
    Backtestable,
    BacktestResult,
    buy_and_hold,
    run_backtest,
    run_backtest_pair,
)
from metatrade.evaluation.plots import exchange_time_labels, plot_equity_curve
from metatrade.io import atomic_write_text, json_safe
from metatrade.market.config import TradingEnvConfig
from metatrade.market.env import TradingEnv

HEADER = "=== Backtesting Report ==="

# The headline lines, in this order; (label, metric key, format kind).
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("Total P&L", "total_pnl", "money"),
    ("Profit Factor", "profit_factor", "ratio"),
    ("Win Rate", "win_rate", "pct"),
    ("Number of Trades", "num_trades", "int"),
    ("Sharpe Ratio", "sharpe", "ratio"),
    ("Maximum Drawdown", "max_drawdown", "pct"),
    ("Average P&L per Trade", "avg_trade_pnl", "money"),
)
_HEADLINE_KEYS = {key for _, key, _ in HEADLINE}
# The other metrics of compute_metrics; a key not listed is labelled from its name.
OTHER: dict[str, tuple[str, str]] = {
    "total_return": ("Total Return", "pct"),
    "annual_return": ("Annualised Return", "pct"),
    "gross_profit": ("Gross Profit", "money"),
    "gross_loss": ("Gross Loss", "money"),
    "sortino": ("Sortino Ratio", "ratio"),
    "calmar": ("Calmar Ratio", "ratio"),
    "max_drawdown_abs": ("Maximum Drawdown ({currency})", "money"),
    "exposure": ("Exposure (time in market)", "pct"),
    "turnover": ("Turnover (x mean equity)", "ratio"),
    "num_bars": ("Bars", "int"),
    "bars_per_year": ("Bars per Year", "int"),
}


def _kind(key: str) -> str:
    """Format kind of a metric not in HEADLINE, from its name."""
    k = key.lower()
    if k.startswith(("num_", "n_")) or k.endswith(("_count", "_trades", "_bars")):
        return "int"
    if any(s in k for s in ("pnl", "equity", "capital", "cost", "fees", "_inr")):
        return "money"
    if any(s in k for s in ("rate", "return", "drawdown", "exposure", "volatility", "pct")):
        return "pct"
    return "ratio"


def _label(key: str) -> str:
    words = key.replace("_", " ").split()
    special = {"pnl": "P&L", "cagr": "CAGR", "var": "VaR", "cvar": "CVaR", "avg": "Average"}
    return " ".join(special.get(w.lower(), w.capitalize()) for w in words)


def format_value(value: Any, kind: str) -> str:
    """One cell: money with thousands separators, fractions as %, ints, ratios 3 decimals."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    v = float(value) + 0.0  # -0.0 -> 0.0
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if kind == "money":
        return f"{v:,.2f}"
    if kind == "pct":
        return f"{100.0 * v:.2f}%"
    if kind == "int":
        return f"{round(v):d}"
    return f"{v:.3f}"


def report_rows(
    columns: Mapping[str, Mapping[str, Any]], currency: str = "money"
) -> list[tuple[str, list[str]]]:
    """(label, formatted cells) for the headline metrics then every other metric, in the
    order of the first column's metrics dict (money labelled in ``currency``). A headline
    metric missing from a column is an error naming it: the report promises those lines."""
    first = next(iter(columns.values()))
    for col, metrics in columns.items():
        missing = [key for _, key, _ in HEADLINE if key not in metrics]
        if missing:
            raise KeyError(
                f"backtest report column {col!r}: metrics lack {missing}; "
                "compute them with metatrade.evaluation.metrics.compute_metrics"
            )
    rows = [
        (label, [format_value(m.get(key), kind) for m in columns.values()])
        for label, key, kind in HEADLINE
    ]
    for key, value in first.items():
        if key in _HEADLINE_KEYS or not isinstance(value, (int, float, np.number, type(None))):
            continue
        label, kind = OTHER.get(key, (_label(key), _kind(key)))
        label = label.format(currency=currency)
        rows.append((label, [format_value(m.get(key), kind) for m in columns.values()]))
    return rows


def format_backtest_report(
    columns: Mapping[str, Mapping[str, Any] | BacktestResult],
    *,
    title: str = "",
    details: Mapping[str, str] | None = None,
    currency: str = "money",
) -> str:
    """The aligned report block headed ``=== Backtesting Report ===``.

    Args:
        columns: column label (e.g. "default costs", "stressed (+2 bps/side)") -> a metrics
            dict or a BacktestResult (its ``metrics``).
        title: a line under the header (policy, task, split).
        details: extra "key: value" lines (period, bars, capital, costs).
        currency: the money's currency, for the labels.
    """
    if not columns:
        raise ValueError("format_backtest_report: no columns given")
    metrics = {
        label: (c.metrics if isinstance(c, BacktestResult) else c) for label, c in columns.items()
    }
    rows = report_rows(metrics, currency)
    labels = list(metrics)
    name_w = max(len(r[0]) for r in rows)
    widths = [max(len(lab), *(len(r[1][i]) for r in rows)) for i, lab in enumerate(labels)]
    lines = [HEADER]
    if title:
        lines.append(title)
    for key, value in (details or {}).items():
        lines.append(f"{key}: {value}")
    head = " " * name_w + "".join(f"  {lab:>{w}}" for lab, w in zip(labels, widths, strict=True))
    lines += [head, "-" * len(head)]
    for label, cells in rows:
        lines.append(
            f"{label:<{name_w}}"
            + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)


def _details(result: BacktestResult, others: Mapping[str, BacktestResult]) -> dict[str, str]:
    """The report's header lines: period in the exchange's zone, market and annualisation,
    capital and costs in the instrument's currency, the cost preset's break-even."""
    market = result.market
    tz = market.timezone if market else "UTC"
    cur = market.currency if market else ""
    ts = result.timestamps
    first, last = exchange_time_labels(ts[[0, -1]], tz)
    tf = str(result.bar_minutes) if market is None else market.timeframe
    unit = f"{tf} min" if tf.isdigit() else tf
    out = {f"Period ({tz})": f"{first} .. {last} ({len(ts) - 1} bars of {unit})"}
    if market is not None:
        out["Market"] = (
            f"{market.instrument.calendar.describe()}, {market.currency}: {market.annualisation()}"
        )
    out["Initial capital"] = f"{result.initial_capital:,.2f} {cur}".rstrip()
    for label, r in others.items():
        out[f"Costs, {label}"] = r.costs.describe(cur)
    out[f"Break-even ({result.costs.label})"] = (
        f"{result.breakeven_bps:+.2f} bps/side of proportional cost (now "
        f"{result.costs.per_side_bps:g}) would leave the net P&L at zero, trades held fixed"
    )
    return out


def _resolve(
    env_or_task: TradingEnv | TaskArrays, split: str | None, config: TradingEnvConfig | None
) -> tuple[TaskArrays, str, TradingEnvConfig]:
    if isinstance(env_or_task, TradingEnv):
        cfg = config or env_or_task.config
        return env_or_task.task_arrays, split or env_or_task.config.split, cfg
    if isinstance(env_or_task, TaskArrays):
        return env_or_task, split or "test", config or TradingEnvConfig()
    raise TypeError(
        f"backtest_and_report: got {type(env_or_task).__name__}; pass a TradingEnv or TaskArrays"
    )


def _write_report_files(
    out: Path,
    report: str,
    results: Mapping[str, BacktestResult],
    arrays: TaskArrays,
    *,
    split: str,
    config: TradingEnvConfig,
    benchmark: bool,
) -> dict[str, Path]:
    """``backtest_and_report``'s files: report, trades CSVs, metrics JSON, equity plot."""
    cfg = config
    default = next(iter(results.values()))
    metrics = {label: r.metrics for label, r in results.items()}
    files: dict[str, Path] = {}
    files["report"] = atomic_write_text(out / "report.txt", report + "\n")
    for i, r in enumerate(results.values()):
        key = "trades" if i == 0 else "trades_stressed"
        files[key] = atomic_write_text(out / f"{key}.csv", r.trades.to_csv(index=False))
    files["metrics"] = atomic_write_text(
        out / "metrics.json", json.dumps(json_safe(metrics), indent=2) + "\n"
    )
    curves = {label: r.equity for label, r in results.items()}
    if benchmark:
        bh = run_backtest(buy_and_hold(), arrays, split=split, config=cfg)
        curves["buy-and-hold"] = bh.equity
    files["equity_plot"] = plot_equity_curve(
        out / "equity.png",
        curves,
        default.timestamps,
        title=f"{default.name} on {default.task} ({split} split)",
        initial_capital=default.initial_capital,
        tz=arrays.market.timezone if arrays.market else "UTC",
    )
    return files


def _report_text(results: dict[str, BacktestResult], split: str, note: str | None) -> str:
    """The text report of a default / stressed pair: title (and ``note``), tables, details."""
    default = next(iter(results.values()))
    title = f"Policy: {default.name} | Task: {default.task} | Split: {split}"
    if note:
        title += f"\n{note}"
    currency = default.market.currency if default.market else "money"
    return format_backtest_report(
        results, title=title, details=_details(default, results), currency=currency
    )


def backtest_and_report(
    policy_or_agent: Backtestable,
    env_or_task: TradingEnv | TaskArrays,
    out_dir: str | Path | None,
    *,
    split: str | None = None,
    config: TradingEnvConfig | None = None,
    name: str | None = None,
    stress_bps: float = 2.0,
    benchmark: bool = True,
    echo: bool = False,
    sample_seed: int | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Backtest at default and stressed costs; write the report, trades CSV, equity PNG.

    Args:
        policy_or_agent: a BaseAgent, ``(policy, params)`` or a PositionRule.
        env_or_task: a TradingEnv (its task arrays, config and split are used) or TaskArrays.
        out_dir: folder for ``report.txt``, ``trades.csv`` (default costs),
            ``trades_stressed.csv``, ``equity.png``, ``metrics.json`` (non-finite metrics
            as null); None writes nothing.
        split: time split to backtest (default: the env's split, or "test" for TaskArrays).
        benchmark: also draw buy-and-hold's equity in the plot.
        echo: print the report.
        sample_seed: draw the policy's actions with this seed instead of taking its mode.
        note: a line under the title (``metatrade backtest``: the split scored and the looks
            at the test period, ``sealed.Period.describe``).

    Returns:
        {"report": str, "metrics": {column: metrics}, "files": {kind: path},
        "results": {column: BacktestResult}}.
    """
    arrays, split, cfg = _resolve(env_or_task, split, config)
    results = run_backtest_pair(
        policy_or_agent,
        arrays,
        split=split,
        config=cfg,
        name=name,
        stress_bps=stress_bps,
        sample_seed=sample_seed,
    )
    report = _report_text(results, split, note)
    metrics = {label: r.metrics for label, r in results.items()}
    files: dict[str, Path] = {}
    if out_dir is not None:
        files = _write_report_files(
            Path(out_dir), report, results, arrays, split=split, config=cfg, benchmark=benchmark
        )
    if echo:
        print(report)
    return {
        "report": report,
        "metrics": metrics,
        "files": {k: str(v) for k, v in files.items()},
        "results": results,
    }


def run_backtest_and_report(
    agent: Backtestable,
    env: TradingEnv | TaskArrays,
    out_dir: str | Path | None = None,
    *,
    stress_bps: float = 2.0,
    echo: bool = True,
) -> dict[str, Any]:
    """What ``Trainer.run_backtest_and_report`` calls: ``backtest_and_report`` printing the
    report by default."""
    return backtest_and_report(agent, env, out_dir, stress_bps=stress_bps, echo=echo)
