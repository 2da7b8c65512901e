"""Trading metrics of one backtest: P&L, trade statistics, risk-adjusted returns, drawdowns.

Annualisation: ``periods_per_year`` is the task's bars per year, read from its market's
calendar (``TaskArrays.bars_per_year``, ``metatrade.data.calendar``: sessions a year times
bars a session, e.g. 252 x ceil(375 / 5) = 18,900 for 5-minute NSE bars, 260 x 24 = 6,240
for hourly FX). Overnight gaps fall inside the first bar's return. Sharpe, Sortino and the
annual return use this factor exactly as empyrical does with ``annualization`` (the tests
cross-check it):

* ``sharpe = mean(r - rf) / std(r - rf, ddof=1) * sqrt(bars_per_year)``
* ``sortino = mean(r - rf) * bars_per_year / (sqrt(mean(min(r - rf, 0)^2)) * sqrt(bars_per_year))``
* ``annual_return = (E_end / E_0) ** (bars_per_year / n_returns) - 1``
* ``calmar = annual_return / max_drawdown``

where ``r`` are per-bar simple returns of the equity curve and ``rf`` the per-bar risk-free
rate (``risk_free_rate / bars_per_year``). Money is in the instrument's currency.

Undefined values are ``nan``, never ``inf`` and never an exception:

| case                               | value                                   |
| ---------------------------------- | --------------------------------------- |
| no trades                          | win_rate, avg_trade_pnl, profit_factor: nan; num_trades 0 |
| trades but no losing trade         | profit_factor: nan (gross_loss = 0)     |
| flat equity (zero volatility, zero mean) | sharpe 0.0, sortino 0.0           |
| zero volatility, non-zero mean     | sharpe nan; sortino nan if no downside  |
| fewer than 2 returns               | sharpe, sortino nan                     |
| no drawdown                        | max_drawdown 0.0, calmar nan            |
| equity <= 0 at some bar            | returns after it undefined: sharpe, sortino, annual_return, calmar nan |
| annualised growth beyond float range (few bars, large gain) | annual_return, calmar nan |
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def breakeven_bps(pnl: float, notional: float, bps_now: float) -> float:
    """Per-side proportional cost (bps) at which net P&L is zero, trades held fixed:
    ``bps_now + 1e4 * pnl / notional`` (notional summed over both sides of every trade)."""
    if not notional > 0:
        return float("nan")
    return bps_now + 1e4 * pnl / notional


def traded_notional(trades: Iterable[Any]) -> float:
    """Notional of every entry and exit: sum of quantity * (entry price + exit price)."""
    return float(
        sum(_get(t, "quantity") * (_get(t, "entry_price") + _get(t, "exit_price")) for t in trades)
    )


def _get(trade: Any, name: str) -> float:
    return float(trade[name] if isinstance(trade, Mapping) else getattr(trade, name))


def _ratio(num: float, den: float) -> float:
    """num / den, with 0/0 = 0.0 and x/0 = nan (documented, never inf)."""
    if den > 0.0 and math.isfinite(den):
        return num / den
    return 0.0 if num == 0.0 else float("nan")


def sharpe_ratio(returns: np.ndarray, periods_per_year: float, risk_free: float = 0.0) -> float:
    """Annualised Sharpe of per-bar returns (empyrical's formula; edge cases in module doc)."""
    excess = np.asarray(returns, dtype=np.float64) - risk_free
    if excess.size < 2 or not np.isfinite(excess).all():
        return float("nan")
    std = float(excess.std(ddof=1))
    if std < 1e-15 * max(1.0, float(np.abs(excess).max())):
        std = 0.0
    return _ratio(float(excess.mean()), std) * math.sqrt(periods_per_year)


def sortino_ratio(returns: np.ndarray, periods_per_year: float, required: float = 0.0) -> float:
    """Annualised Sortino of per-bar returns (empyrical's formula; edge cases in module doc)."""
    excess = np.asarray(returns, dtype=np.float64) - required
    if excess.size < 2 or not np.isfinite(excess).all():
        return float("nan")
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    return _ratio(float(excess.mean()) * periods_per_year, downside * math.sqrt(periods_per_year))


def drawdown_series(equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar drawdown from the running peak, >= 0: (fraction of the peak, money). [N] -> [N].

    A non-positive peak counts as a total (100 %) drawdown."""
    equity = np.asarray(equity, dtype=np.float64)
    peak = np.maximum.accumulate(equity)
    dd_abs = peak - equity
    with np.errstate(divide="ignore", invalid="ignore"):
        dd_pct = np.where(peak > 0.0, dd_abs / peak, 1.0)
    return dd_pct, dd_abs


def drawdowns(equity: np.ndarray) -> tuple[float, float]:
    """(max drawdown as a positive fraction of the running peak, max drawdown in money)."""
    dd_pct, dd_abs = drawdown_series(equity)
    return float(dd_pct.max(initial=0.0)), float(dd_abs.max(initial=0.0))


def compute_metrics(
    equity_curve: Iterable[float],
    trades: Iterable[Any] = (),
    *,
    periods_per_year: float,
    positions: Iterable[float] | None = None,
    initial_capital: float | None = None,
    risk_free_rate: float = 0.0,
) -> dict[str, float]:
    """Metrics of a backtest.

    Args:
        equity_curve: equity at each bar close, first value = starting equity [N].
        trades: closed trades, ``metatrade.market.Trade`` objects or mappings with
            ``net_pnl``, ``quantity``, ``entry_price``, ``exit_price`` (``bars_held``
            is used for exposure when ``positions`` is not given).
        periods_per_year: bars per year of the series (``TaskArrays.bars_per_year``).
        positions: position (-1/0/+1) held over each of the N-1 bar returns; exposure
            is the fraction of them with a position.
        initial_capital: P&L baseline (default: ``equity_curve[0]``).
        risk_free_rate: annual risk-free rate for Sharpe and Sortino.

    Returns:
        dict of floats: total_pnl, total_return, annual_return, num_trades, win_rate,
        avg_trade_pnl, gross_profit, gross_loss, profit_factor, sharpe, sortino,
        max_drawdown (fraction), max_drawdown_abs (money), calmar, exposure, turnover,
        num_bars, bars_per_year. ``turnover`` = traded notional (entries and exits)
        / mean equity over the period.
    """
    equity = _equity_array(equity_curve)
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year={periods_per_year!r}: use the bars per year (> 0)")
    ppy = float(periods_per_year)
    start = float(initial_capital) if initial_capital is not None else float(equity[0])
    n_ret = equity.size - 1
    returns = _bar_returns(equity)
    solvent = bool((equity > 0.0).all())

    trades = list(trades)
    trade_stats = _trade_stats(np.array([_get(t, "net_pnl") for t in trades], dtype=np.float64))
    rf = risk_free_rate / ppy
    max_dd, max_dd_abs = drawdowns(equity)
    annual_return = _annual_return(equity, ppy) if solvent and n_ret > 0 else float("nan")
    calmar = annual_return / max_dd if max_dd > 0 and math.isfinite(annual_return) else float("nan")

    return {
        "total_pnl": float(equity[-1] - start),
        "total_return": float(equity[-1] / start - 1.0),
        "annual_return": annual_return,
        **trade_stats,
        "sharpe": sharpe_ratio(returns, ppy, rf),
        "sortino": sortino_ratio(returns, ppy, rf),
        "max_drawdown": max_dd,
        "max_drawdown_abs": max_dd_abs,
        "calmar": calmar,
        "exposure": _exposure(positions, trades, n_ret),
        "turnover": _turnover(trades, equity),
        "num_bars": float(n_ret),
        "bars_per_year": float(ppy),
    }


def _bar_returns(equity: np.ndarray) -> np.ndarray:
    """[N-1] simple return of each bar; nan where the equity before it is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(equity[:-1] > 0.0, equity[1:] / equity[:-1] - 1.0, np.nan)


def _equity_array(equity_curve: Iterable[float]) -> np.ndarray:
    """The equity curve as a finite 1-D float64 array of >= 1 values (else a clear error)."""
    equity = np.asarray(list(equity_curve), dtype=np.float64)
    if equity.ndim != 1 or equity.size == 0:
        raise ValueError(f"equity_curve has shape {equity.shape}: pass a 1-D series of >= 1 values")
    if not np.isfinite(equity).all():
        bad = int(np.argmax(~np.isfinite(equity)))
        raise ValueError(f"equity_curve[{bad}] = {equity[bad]}: equity must be finite")
    return equity


def _exposure(positions: Iterable[float] | None, trades: list[Any], n_ret: int) -> float:
    """Fraction of the ``n_ret`` bar returns held with a position: from ``positions`` when
    given, else from the trades' ``bars_held`` (capped at 1)."""
    if positions is not None:
        pos = np.asarray(list(positions), dtype=np.float64)
        return float((pos != 0).mean()) if pos.size else 0.0
    held = sum(_get(t, "bars_held") for t in trades) if trades else 0.0
    return min(1.0, held / n_ret) if n_ret > 0 else 0.0


def _turnover(trades: list[Any], equity: np.ndarray) -> float:
    """Traded notional (entries and exits) / mean equity over the period."""
    notional = traded_notional(trades)
    return float(notional / equity.mean()) if equity.mean() > 0 else float("nan")


def _trade_stats(pnl: np.ndarray) -> dict[str, float]:
    """num_trades, win_rate, avg_trade_pnl, gross_profit, gross_loss, profit_factor of the
    closed trades' net P&L (NaN ratios when there are no trades)."""
    n_trades = int(pnl.size)
    gross_profit = float(pnl[pnl > 0].sum())
    gross_loss = float(-pnl[pnl < 0].sum())
    if n_trades:
        win_rate = float((pnl > 0).mean())
        avg_pnl = float(pnl.mean())
        profit_factor = gross_profit / gross_loss if gross_loss > 0 else float("nan")
    else:
        win_rate = avg_pnl = profit_factor = float("nan")
    return {
        "num_trades": float(n_trades),
        "win_rate": win_rate,
        "avg_trade_pnl": avg_pnl,
        "gross_profit": gross_profit,
        "gross_loss": gross_loss,
        "profit_factor": profit_factor,
    }


def _annual_return(equity: np.ndarray, ppy: float) -> float:
    """Compound annual growth of a solvent equity curve of >= 2 values (NaN on overflow)."""
    n_ret = equity.size - 1
    with np.errstate(over="ignore"):  # a short, strongly growing series compounds past 1e308
        growth = float((equity[-1] / equity[0]) ** (ppy / n_ret))
    return growth - 1.0 if math.isfinite(growth) else float("nan")
