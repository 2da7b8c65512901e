"""Classical adaptive rules of issue 19 (a prototype of ``evaluation/baselines.py``, which
another engineer builds): each is fitted on exactly the adaptation window and then held on
the test bars, as target positions.

* plug-in AR(1): least squares (with intercept) of r_{t+1} on r_t over the window; hold the
  sign of the predicted next return;
* momentum / reversal: the sign (or minus the sign) of the last h bars' return, h chosen by
  P&L on the window from ``HORIZONS``;
* time of day: the mean next-bar return by session bucket on the window; hold its sign;
* selected: of these four, the one with the best P&L on the window (what a desk does).
"""

from __future__ import annotations

import numpy as np

from experiments.regimes.features import Bars

HORIZONS = (1, 2, 3, 4, 6, 8, 12, 24)
TOD_BUCKETS = 6
RULES = ("plugin", "momentum", "reversal", "tod")


def _trailing(x: np.ndarray, h: int) -> np.ndarray:
    c = np.cumsum(x)
    out = c.copy()
    out[h:] -= c[:-h]
    return out


def _next_bucket(b: Bars, buckets: int) -> np.ndarray:
    frac = np.append(b.clock.fraction[1:], 0.0)
    return np.minimum((frac * buckets).astype(int), buckets - 1)


def fit_positions(b: Bars, nxt: np.ndarray, a0: int, a1: int) -> dict[str, np.ndarray]:
    """Target positions [N] of every rule, fitted on rows [a0, a1) (decisions whose next
    return lies inside the window: rows a0 .. a1-2)."""
    fit = slice(a0, a1 - 1)
    pnl = lambda pos: float((pos[fit] * nxt[fit]).sum())  # noqa: E731
    r = b.ret
    x, y = r[a0 : a1 - 1], r[a0 + 1 : a1]
    design = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    out = {"plugin": np.sign(coef[0] + coef[1] * r)}
    for name, sign in (("momentum", 1.0), ("reversal", -1.0)):
        cands = [sign * np.sign(_trailing(r, h)) for h in HORIZONS]
        out[name] = cands[int(np.argmax([pnl(p) for p in cands]))]
    bucket = _next_bucket(b, TOD_BUCKETS)
    means = np.array(
        [
            nxt[fit][bucket[fit] == k].mean() if (bucket[fit] == k).any() else 0.0
            for k in range(TOD_BUCKETS)
        ]
    )
    out["tod"] = np.sign(means[bucket])
    best = max(RULES, key=lambda k: pnl(out[k]))
    out["selected"] = out[best]
    return out
