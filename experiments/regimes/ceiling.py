"""An estimation ceiling for the research prototype: least squares on each task's *true*
structure (its kind, lag count, bucket grid, vol window, hidden states, move length known;
only the coefficients estimated on the 512-bar adaptation window), holding the sign of the
prediction. What a rule that knew the kind could reach from 512 bars: no kind-agnostic
adaptive rule should be expected to beat it."""

from __future__ import annotations

import numpy as np

from experiments.regimes.features import Bars
from metatrade.data.regime_kinds import _gap_drift, bucket_of, realised_vol
from metatrade.data.regimes import TaskRule


def _trailing(x: np.ndarray, h: int) -> np.ndarray:
    c = np.cumsum(x)
    out = c.copy()
    out[h:] -= c[:-h]
    return out


def structure(rule: TaskRule, b: Bars) -> np.ndarray:
    """Regressors [N, K] whose coefficients the true rule fixes (the expectation is linear
    in them)."""
    p = rule.params
    if rule.kind == "ar":
        return _trailing(b.body, int(p["lags"]))[:, None]
    if rule.kind == "seasonal":
        nxt_frac = np.append(b.clock.fraction[1:], 0.0)
        return np.eye(len(p["drift"]))[bucket_of(nxt_frac, len(p["drift"]))]
    if rule.kind == "vol_ar":
        high = realised_vol(b.body, int(p["window"])) > rule.sigma
        return np.stack([b.body * high, b.body * ~high], axis=1)
    if rule.kind == "markov":
        z = rule.states_at(b.timestamps)
        return np.stack([b.body * (z == k) for k in range(len(p["phi"]))], axis=1)
    if rule.kind == "gap":
        unit = dict(p, follow=1.0)
        drift = _gap_drift(unit, b.gap, b.clock)  # G / m on the move's bars
        nxt = np.zeros(len(drift))
        nxt[:-1] = drift[1:]
        # the opening gap is in b.gap at the session's first bar; rows before the first
        # session of the arrays may miss it: harmless for a fit
        return nxt[:, None]
    return np.zeros((len(b.body), 1))


def informed_positions(rule: TaskRule, b: Bars, nxt: np.ndarray, a0: int, a1: int) -> np.ndarray:
    x = structure(rule, b)
    fit = slice(a0, a1 - 1)
    coef, *_ = np.linalg.lstsq(x[fit], nxt[fit], rcond=None)
    return np.sign(x @ coef)
