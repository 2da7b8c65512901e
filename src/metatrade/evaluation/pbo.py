"""The probability of backtest overfitting (PBO) by combinatorially symmetric
cross-validation (CSCV): Bailey, Borwein, Lopez de Prado & Zhu (2017), "The probability of
backtest overfitting", Journal of Computational Finance 20(4), section 2.

Given a matrix M [T periods, N trials] of per-period returns (one column per configuration
tried on the same periods):

1. cut the T rows into S contiguous blocks of T // S rows (S even; the first T mod S rows
   are dropped, as in the paper's reference code);
2. for each of the C(S, S/2) combinations c of S/2 blocks: J = their rows (in sample),
   J-bar = the other S/2 blocks (out of sample);
3. the performance R (per-period Sharpe ratio, mean / std ddof 1) of every trial on J and
   R-bar on J-bar; n* = argmax R (the trial a researcher would pick in sample);
4. omega_c = rank of n* among the N trials on J-bar / (N + 1) (rank 1 = worst, ties
   averaged), lambda_c = ln(omega_c / (1 - omega_c)) (the logit);
5. PBO = the fraction of combinations with lambda_c <= 0: the in-sample best is at or below
   the out-of-sample median.

Performance degradation: the least-squares line of R-bar[n*] on R[n*] across combinations
(a negative slope: what looked best in sample does worse out of sample), and the
probability of loss, the fraction of combinations with R-bar[n*] < 0.

No maintained library computes PBO (skfolio's ``CombinatorialPurgedCV`` splits for
cross-validation but stops there); ``tests/test_pbo.py`` checks this vectorised version
against a literal loop over the paper's steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as st

from metatrade.evaluation.registry import Trial

DEFAULT_PARTITIONS = 16


@dataclass(frozen=True)
class PBOResult:
    """What CSCV measured (module docstring). Arrays are [C], one per combination."""

    pbo: float
    logits: np.ndarray
    is_sharpe: np.ndarray
    oos_sharpe: np.ndarray
    slope: float
    intercept: float
    prob_oos_loss: float
    partitions: int
    trials: int
    periods: int

    def summary(self) -> dict[str, float]:
        return {
            "pbo": self.pbo,
            "pbo_slope": self.slope,
            "pbo_prob_oos_loss": self.prob_oos_loss,
            "pbo_partitions": float(self.partitions),
            "pbo_trials": float(self.trials),
            "pbo_periods": float(self.periods),
            "pbo_median_logit": float(np.median(self.logits)),
        }


def choose_partitions(periods: int, *, most: int = DEFAULT_PARTITIONS, min_rows: int = 2) -> int:
    """The largest even S <= ``most`` whose blocks hold at least ``min_rows`` periods (0 when
    even S = 2 does not fit)."""
    s = min(most, periods // max(1, min_rows))
    s -= s % 2
    return s if s >= 2 else 0


def _block_sums(m: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-block sums and sums of squares [S, N] of the last (T // S) * S rows."""
    rows = m.shape[0] // s
    x = m[m.shape[0] - rows * s :].reshape(s, rows, m.shape[1])
    return x.sum(1), (x * x).sum(1), rows


def _sharpe(total: np.ndarray, total_sq: np.ndarray, n: int) -> np.ndarray:
    mean = total / n
    var = np.maximum(total_sq - n * mean * mean, 0.0) / (n - 1)
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 1e-15, mean / sd, 0.0)


def pbo(returns: ArrayLike, *, partitions: int = DEFAULT_PARTITIONS) -> PBOResult:
    """PBO of the trials in ``returns`` [T periods, N trials] with S = ``partitions`` blocks.

    Raises ValueError for fewer than 2 trials, an odd S, or blocks of fewer than 1 period.
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"pbo: returns must be [T periods, N >= 2 trials], got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("pbo: returns contain NaN or inf; align the trials on common periods")
    s = int(partitions)
    if s < 2 or s % 2 or m.shape[0] // s < 1:
        raise ValueError(f"pbo: partitions={s} must be even, >= 2 and <= T={m.shape[0]}")
    sums, sq, rows = _block_sums(m, s)
    combos = np.array(list(itertools.combinations(range(s), s // 2)))  # [C, S/2]
    member = np.zeros((len(combos), s))
    np.put_along_axis(member, combos, 1.0, axis=1)  # [C, S] in-sample blocks
    n_half = rows * s // 2
    r_is = _sharpe(member @ sums, member @ sq, n_half)  # [C, N]
    r_oos = _sharpe((1 - member) @ sums, (1 - member) @ sq, n_half)
    best = np.argmax(r_is, axis=1)  # n* per combination
    ranks = st.rankdata(r_oos, axis=1)  # 1 = worst out of sample
    omega = ranks[np.arange(len(best)), best] / (m.shape[1] + 1)
    logits = np.log(omega / (1 - omega))
    x, y = r_is[np.arange(len(best)), best], r_oos[np.arange(len(best)), best]
    if np.ptp(x) > 0:
        slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
    else:
        slope, intercept = math.nan, float(y.mean())
    return PBOResult(
        pbo=float((logits <= 0).mean()),
        logits=logits,
        is_sharpe=x,
        oos_sharpe=y,
        slope=slope,
        intercept=intercept,
        prob_oos_loss=float((y < 0).mean()),
        partitions=s,
        trials=m.shape[1],
        periods=m.shape[0],
    )


def trial_matrix(trials: Sequence[Trial]) -> tuple[list[str], np.ndarray, list[Trial]]:
    """(periods, [T, N] returns, the trials used): the trials that stored per-period returns,
    aligned on the periods every one of them has, in period order."""
    with_returns = [t for t in trials if t.returns]
    if not with_returns:
        return [], np.zeros((0, 0)), []
    common = set(with_returns[0].returns or {})
    for t in with_returns[1:]:
        common &= set(t.returns or {})
    periods = sorted(common)
    m = np.array([[float((t.returns or {})[p]) for t in with_returns] for p in periods])
    return periods, m.reshape(len(periods), len(with_returns)), with_returns


def pbo_of_trials(trials: Sequence[Trial], *, most: int = DEFAULT_PARTITIONS) -> dict[str, float]:
    """PBO of registry trials on one data set and split (their common periods), with the
    largest even S <= ``most`` that leaves 2 periods a block; nan when there are fewer than
    2 trials or 4 common periods. Returns ``PBOResult.summary()``."""
    periods, m, used = trial_matrix(trials)
    s = choose_partitions(len(periods), most=most)
    nan = {"pbo": math.nan, "pbo_trials": float(len(used)), "pbo_periods": float(len(periods))}
    if len(used) < 2 or s < 2:
        return nan
    return pbo(np.nan_to_num(m), partitions=s).summary()
