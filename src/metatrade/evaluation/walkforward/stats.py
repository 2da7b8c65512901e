"""Statistics of stitched out-of-sample records: daily returns, Sharpe and its probabilistic
and deflated versions, drawdown, turnover, hit rate, cost break-even, block bootstrap.

Conventions (docs/evaluation.md has the derivations):

* Daily returns: the stitched equity at the last bar of each trading session (the task's
  calendar, ``TaskArrays.sessions`` through ``bootstrap.session_dates``), over the previous
  session's (the first over C0).
  Annualisation: the market's sessions per year (``metatrade.data.calendar``: 252 for an
  exchange, 260 for 24/5, 365 for 24/7), ``periods_per_year`` below.
* Sharpe = mean / std (ddof 1) of daily returns, times sqrt(periods_per_year) when annualised.
* PSR(SR*) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)), per-day SR,
  g3 skewness and g4 (non-excess) kurtosis, both population moments (Bailey & Lopez de
  Prado 2012, "The Sharpe ratio efficient frontier", eq. 11 of their notation).
* DSR = PSR(SR0), SR0 = sqrt(V[SR_n]) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))
  the expected maximum Sharpe of N trials with per-day Sharpe variance V[SR_n] and
  gamma Euler's constant (Bailey & Lopez de Prado 2014, "The deflated Sharpe ratio", eq. 2).
  Matches ``skfolio.measures.deflated_sharpe_ratio`` (tested). N and V[SR_n] come from the
  trial registry for the data set scored (``trial_evidence``): every trial recorded on it,
  this run's policy rows included; without a registry, this run's policy rows alone.
* PBO: CSCV over the registry's trials on the same data set and split (``evaluation.pbo``).
* Cost break-even: the per-side proportional cost (bps of notional) at which the net
  P&L is zero with the trades held fixed: ``bps_now + 1e4 * pnl / notional``, notional
  summed over both sides of every round trip, ``bps_now`` the cost preset's mean
  proportional cost per side (``CostModel.per_side_bps``: side-only charges such as STT
  count half). Fixed fees and slippage stay as configured.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from arch.bootstrap import StationaryBootstrap
from scipy import stats as st

from metatrade.evaluation.bootstrap import (
    BlockPlan,
    ConfidenceInterval,
    block_length,
    percentile_interval,
)
from metatrade.evaluation.metrics import breakeven_bps, drawdowns  # noqa: F401 (re-exported)
from metatrade.evaluation.pbo import pbo_of_trials
from metatrade.evaluation.registry import TrialLog, TrialRegistry

EULER_GAMMA = 0.5772156649015329


def daily_returns(equity: np.ndarray, sessions: np.ndarray, c0: float) -> pd.Series:
    """Session returns of a stitched equity curve [n], grouped by each bar's trading session
    ``sessions`` ([n] datetime64[D] from ``bootstrap.session_dates``, or int64 days since
    1970-01-01: ``TaskArrays.sessions``), indexed by the session's date."""
    days = pd.DatetimeIndex(np.asarray(sessions).astype("datetime64[D]")).as_unit("ns")
    close = pd.Series(np.asarray(equity, dtype=np.float64), index=days).groupby(level=0).last()
    prev = close.shift(1)
    prev.iloc[0] = c0
    return close / prev - 1.0


def sharpe(returns: np.ndarray, periods: float = 1.0) -> float:
    """mean / std (ddof 1) times sqrt(periods); nan when undefined (< 2 values or no std)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return float("nan")
    sd = r.std(ddof=1)
    if not sd > 1e-15 * max(1.0, float(np.abs(r).max())):
        return float("nan")
    return float(r.mean() / sd * math.sqrt(periods))


def psr_from_moments(
    sr: float, n: int, skew: float, kurtosis: float, benchmark: float = 0.0
) -> float:
    """PSR from a per-period Sharpe ``sr`` over ``n`` returns with ``skew`` and (non-excess)
    ``kurtosis`` (Bailey & Lopez de Prado 2012); nan when the variance term is not > 0."""
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if n < 3 or not var > 0 or not math.isfinite(sr):
        return float("nan")
    return float(st.norm.cdf((sr - benchmark) * math.sqrt(n - 1) / math.sqrt(var)))


def probabilistic_sharpe_ratio(returns: np.ndarray, benchmark: float = 0.0) -> float:
    """PSR: P(true per-period Sharpe > ``benchmark``) of a return series; population
    skewness and kurtosis, Sharpe with the ddof-1 std."""
    r = np.asarray(returns, dtype=np.float64)
    sr = sharpe(r)
    if r.size < 3 or not math.isfinite(sr):
        return float("nan")
    g3 = float(st.skew(r, bias=True))
    g4 = float(st.kurtosis(r, fisher=False, bias=True))
    return psr_from_moments(sr, r.size, g3, g4, benchmark)


def expected_max_sharpe(n_trials: float, trial_sharpe_std: float) -> float:
    """SR0: expected maximum of ``n_trials`` per-period Sharpe ratios with true mean 0
    and standard deviation ``trial_sharpe_std`` (Bailey & Lopez de Prado 2014)."""
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials}: count at least the row evaluated")
    if n_trials == 1 or trial_sharpe_std == 0:
        return 0.0
    return trial_sharpe_std * (
        (1 - EULER_GAMMA) * st.norm.ppf(1 - 1 / n_trials)
        + EULER_GAMMA * st.norm.ppf(1 - 1 / (n_trials * math.e))
    )


def deflated_sharpe_ratio(
    returns: np.ndarray, *, n_trials: float, trial_sharpe_std: float
) -> float:
    """DSR = PSR(SR0): the PSR against the best Sharpe that ``n_trials`` tries would give
    by luck alone (Bailey & Lopez de Prado 2014)."""
    return probabilistic_sharpe_ratio(returns, expected_max_sharpe(n_trials, trial_sharpe_std))


def cost_sweep(
    pnl: float, notional: float, bps_now: float, c0: float, grid: np.ndarray
) -> np.ndarray:
    """Total return at each per-side proportional cost in ``grid`` (bps), trades held fixed."""
    return (pnl - (np.asarray(grid, dtype=np.float64) - bps_now) * 1e-4 * notional) / c0


def record_metrics(
    equity: np.ndarray,
    daily: pd.Series,
    *,
    c0: float,
    trades: list,
    notional: float,
    bps_now: float,
    periods_per_year: float,
) -> dict[str, float]:
    """Metrics of one stitched record (module docstring for the definitions);
    ``periods_per_year``: sessions a year of the market (annualises the daily figures)."""
    r = daily.to_numpy()
    days = max(1, r.size)
    total = float(equity[-1] / c0 - 1.0)
    growth = 1.0 + total
    pnl = np.array([t.net_pnl for t in trades], dtype=np.float64)
    mean_eq = float(np.mean(equity))
    return {
        "total_return": total,
        "annual_return": growth ** (periods_per_year / days) - 1.0 if growth > 0 else float("nan"),
        "sharpe": sharpe(r, periods_per_year),
        "psr": probabilistic_sharpe_ratio(r),
        "max_drawdown": drawdowns(equity)[0],
        "turnover": notional / mean_eq * periods_per_year / days if mean_eq > 0 else float("nan"),
        "trades": float(pnl.size),
        "hit_rate": float((pnl > 0).mean()) if pnl.size else float("nan"),
        "breakeven_bps": breakeven_bps(float(equity[-1] - c0), notional, bps_now),
        "days": float(r.size),
    }


def trial_evidence(
    daily: pd.DataFrame,
    policy_rows: Sequence[str],
    *,
    log: TrialLog | None,
    data_hash: str,
    split: str,
    record: bool = True,
) -> dict[str, Any]:
    """Record ``policy_rows`` (their daily returns) as trials of ``data_hash`` / ``split``
    (unless ``record`` is False: already recorded under the same hash by this run),
    then read back what the deflated Sharpe ratio and PBO need: N (``count_trials``), the
    variance of the trials' per-day Sharpe ratios (``sharpe_variance``) and the PBO of the
    trials on the same split. Without a registry (``log`` None) the evidence is this run's
    policy rows alone, and says so."""
    if log is None:  # the same path through a registry of this run's rows alone
        with tempfile.TemporaryDirectory() as tmp:
            own = TrialLog(TrialRegistry(Path(tmp) / "trials.sqlite"), run="", config_hash="")
            out = trial_evidence(daily, policy_rows, log=own, data_hash=data_hash, split=split)
        return {**out, "source": "this run's rows (no registry)"}
    for k in policy_rows if record else ():
        log.record(label=k, data_hash=data_hash, split=split, returns=daily[k])
    reg = log.registry
    return {
        "n_registry": float(reg.count_trials(data_hash)),
        "sharpe_var": reg.sharpe_variance(data_hash),
        "source": str(reg.path),
        "data_hash": data_hash,
        "split": split,
        "test_looks": float(len(reg.looks(data_hash, "test"))),
        **pbo_of_trials(reg.trials(data_hash=data_hash, split=split)),
    }


def add_deflated(
    metrics: Mapping[str, dict[str, float]],
    daily: Mapping[str, np.ndarray],
    evidence: Mapping[str, Any],
    configurations: int = 1,
) -> dict[str, Any]:
    """DSR of every row with N = the trials on the data set (``trial_evidence``) x
    ``configurations`` (tried outside the registry) and their per-day Sharpe variance;
    writes ``dsr`` into ``metrics`` and returns how the trials were counted."""
    n_trials = max(1, int(evidence["n_registry"])) * max(1, configurations)
    var = float(evidence["sharpe_var"])
    std = math.sqrt(var) if math.isfinite(var) and var > 0 else 0.0
    for k, m in metrics.items():
        m["dsr"] = deflated_sharpe_ratio(daily[k], n_trials=n_trials, trial_sharpe_std=std)
    return {
        **evidence,
        "n_trials": float(n_trials),
        "configurations": float(configurations),
        "trial_sharpe_std_daily": std,
        "sr0_daily": expected_max_sharpe(n_trials, std),
    }


def bootstrap_daily(
    matrix: np.ndarray,
    labels: list[str],
    *,
    reps: int,
    block_days: float | None,
    seed: int,
    periods_per_year: float,
    confidence: float = 0.95,
) -> tuple[
    dict[str, dict[str, ConfidenceInterval]],
    Callable[[str, str, str], ConfidenceInterval],
    BlockPlan,
]:
    """Stationary block bootstrap over days (Politis & Romano 1994, ``arch.bootstrap``)
    of the annualised Sharpe and return of every column of ``matrix`` [days, rows], with
    mean block ``block_days`` or, when None, ``bootstrap.block_length`` of the columns
    (``arch``'s ``optimal_block_length``).

    Every replicate resamples the same days for all rows (paired); a pooled matrix (the
    tasks' mean each day) thereby resamples whole days of every task jointly. Returns
    per-row CIs, ``diff(stat, a, b)`` (the CI of row a minus row b) and the BlockPlan.
    """
    x = np.nan_to_num(np.asarray(matrix, dtype=np.float64))
    plan = BlockPlan(block_days if block_days is not None else block_length(x), len(x))

    def stat(data: np.ndarray) -> np.ndarray:
        mu = data.mean(axis=0)
        sd = data.std(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sr = np.where(sd > 1e-15, mu / sd, 0.0) * math.sqrt(periods_per_year)
        ann = np.exp(np.log1p(np.clip(data, -0.999999, None)).mean(axis=0) * periods_per_year) - 1
        return np.concatenate([sr, ann])

    est = stat(x)
    # arch types the mean block length as int; a real mean is valid (it uses 1 / block)
    bs = StationaryBootstrap(max(1.0, plan.block), x, seed=np.random.default_rng(seed))  # type: ignore[arg-type]
    reps_arr = bs.apply(stat, reps)  # [reps, 2 * rows]
    m = len(labels)
    names = ("sharpe", "annual_return")
    cis = {
        lab: {
            nm: percentile_interval(reps_arr[:, s * m + i], float(est[s * m + i]), confidence)
            for s, nm in enumerate(names)
        }
        for i, lab in enumerate(labels)
    }

    def diff(name: str, a: str, b: str) -> ConfidenceInterval:
        s = names.index(name)
        ia, ib = s * m + labels.index(a), s * m + labels.index(b)
        return percentile_interval(
            reps_arr[:, ia] - reps_arr[:, ib], float(est[ia] - est[ib]), confidence
        )

    return cis, diff, plan
