"""The kinds of structure of the synthetic regime family: how each kind draws its parameters,
simulates its bar returns, and what its true next-bar expectation (the oracle) is.

Every kind writes bars the same way (``metatrade.data.regimes``): a bar's log return splits
into an overnight gap ``G_t = log(open_t / close_{t-1})`` (non-zero only on a session's first
bar) and a body ``b_t = log(close_t / open_t)``; within a session ``open_t == close_{t-1}``.
A position decided at the close of bar t fills at ``open[t+1]`` and (with the session
square-off) earns the body ``b_{t+1}``, so each kind's oracle is the sign of
``E[b_{t+1} | information at bar t]``, computed here from the bars alone (plus the hidden
state for ``markov``):

======== ========================================================== =========================
kind     body return b_{t+1}                                         E[b_{t+1} | bar t]
======== ========================================================== =========================
ar       (phi / h) * (b_t + ... + b_{t-h+1}) + sigma eps            the first term
seasonal drift[bucket of bar t+1] * sigma + sigma eps               drift[...] * sigma
vol_ar   phi_v * b_t + sigma_t eps, phi_v = phi_high when the       phi_v * b_t
         realised vol of the last w bodies exceeds sigma, else
         phi_low; log sigma_t an AR(1) (persistence, vol_of_vol)
markov   phi[z_t] * b_t + sigma eps; z a hidden Markov chain         phi[z_t] * b_t (knows z_t);
         switching with probability p per bar                        filter: sum_z P(z_t|bars) ...
gap      follow * G / m + sigma eps on the m bars after the          follow * G / m there, else 0
         session's first bar (G: today's overnight gap,
         std ``gap`` * sigma); follow > 0 continues, < 0 fades
noise    sigma eps                                                   0
======== ========================================================== =========================

Kinds other than ``gap`` get overnight gaps of std ``overnight_gap`` x sigma that predict
nothing. Parameters in units of sigma (drift, gap sizes) keep the kinds comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import lfilter

KINDS = ("ar", "seasonal", "vol_ar", "markov", "gap", "noise")


@dataclass(frozen=True)
class Clock:
    """Where each bar sits in its session: ``fraction`` of the session elapsed at the bar's
    start, float [N] in [0, 1); ``first`` True on a session's first bar, bool [N]."""

    fraction: np.ndarray
    first: np.ndarray


@dataclass(frozen=True)
class Simulated:
    """One kind's draw: bodies ``body`` [N], overnight gaps ``gap`` [N] (0 inside sessions),
    per-bar innovation std ``sigma_t`` [N], and the hidden state path ``states`` (int [N]) or
    None."""

    body: np.ndarray
    gap: np.ndarray
    sigma_t: np.ndarray
    states: np.ndarray | None = None


def overnight_gaps(clock: Clock, scale: float, rng: np.random.Generator) -> np.ndarray:
    """N(0, scale^2) on every session's first bar but the series' first (no close before)."""
    first = clock.first.copy()
    first[0] = False
    return np.where(first, scale * rng.standard_normal(len(first)), 0.0)


def _ar(p: Mapping[str, Any], sigma: float, clock: Clock, rng: np.random.Generator) -> Simulated:
    h, phi = int(p["lags"]), float(p["phi"])
    eps = sigma * rng.standard_normal(len(clock.first))
    body = lfilter([1.0], [1.0, *([-phi / h] * h)], eps)  # b_t = phi/h sum_k b_{t-k} + eps_t
    return Simulated(body, np.zeros_like(body), np.full_like(body, sigma))


def _ar_expect(p: Mapping[str, Any], obs: Observed) -> np.ndarray:
    h, phi = int(p["lags"]), float(p["phi"])
    return phi / h * _trailing_sum(obs.body, h)


def bucket_of(fraction: np.ndarray, buckets: int) -> np.ndarray:
    """Index of the equal-width session bucket of each bar, int [N] in [0, buckets)."""
    return np.minimum((np.asarray(fraction) * buckets).astype(np.int64), buckets - 1)


def _seasonal(
    p: Mapping[str, Any], sigma: float, clock: Clock, rng: np.random.Generator
) -> Simulated:
    drift = np.asarray(p["drift"], dtype=np.float64)
    mean = sigma * drift[bucket_of(clock.fraction, len(drift))]
    body = mean + sigma * rng.standard_normal(len(mean))
    return Simulated(body, np.zeros_like(body), np.full_like(body, sigma))


def _seasonal_expect(p: Mapping[str, Any], obs: Observed) -> np.ndarray:
    drift = np.asarray(p["drift"], dtype=np.float64)
    nxt = np.zeros(len(obs.body))
    nxt[:-1] = obs.sigma * drift[bucket_of(obs.clock.fraction[1:], len(drift))]
    return nxt


def realised_vol(body: np.ndarray, window: int) -> np.ndarray:
    """Root mean square of the last ``window`` bodies up to each bar (fewer at the start)."""
    sq = np.cumsum(np.asarray(body, dtype=np.float64) ** 2)
    total = sq - np.concatenate([np.zeros(window), sq[:-window]])[: len(sq)]
    count = np.minimum(np.arange(1, len(sq) + 1), window)
    return np.sqrt(total / count)


def _vol_ar(
    p: Mapping[str, Any], sigma: float, clock: Clock, rng: np.random.Generator
) -> Simulated:
    n, w = len(clock.first), int(p["window"])
    rho, s = float(p["persistence"]), float(p["vol_of_vol"])
    logvol = lfilter([s * np.sqrt(1.0 - rho * rho)], [1.0, -rho], rng.standard_normal(n))
    sigma_t = sigma * np.exp(logvol)
    eps = sigma_t * rng.standard_normal(n)
    body = np.empty(n)
    cum = np.zeros(n + 1)  # cum[t + 1] = sum of squared bodies 0..t, as realised_vol sums
    phi_high, phi_low = float(p["phi_high"]), float(p["phi_low"])
    prev = 0.0
    for t in range(n):  # phi depends on the realised vol up to t-1: a loop of scalar steps
        k = min(t, w)
        rv = np.sqrt((cum[t] - cum[t - k]) / k) if k else 0.0
        prev = (phi_high if rv > sigma else phi_low) * prev + eps[t]
        body[t] = prev
        cum[t + 1] = cum[t] + prev * prev
    return Simulated(body, np.zeros(n), sigma_t)


def _vol_ar_expect(p: Mapping[str, Any], obs: Observed) -> np.ndarray:
    high = realised_vol(obs.body, int(p["window"])) > obs.sigma
    return np.where(high, p["phi_high"], p["phi_low"]) * obs.body


def _markov(
    p: Mapping[str, Any], sigma: float, clock: Clock, rng: np.random.Generator
) -> Simulated:
    n, phis, switch = len(clock.first), np.asarray(p["phi"]), float(p["switch_prob"])
    k = len(phis)
    states = np.empty(n, dtype=np.int64)
    states[0] = rng.integers(k)
    moves = rng.random(n) < switch
    jumps = rng.integers(1, k, size=n) if k > 1 else np.zeros(n, dtype=np.int64)
    for t in range(1, n):  # z_t = z_{t-1}, or another state with probability p
        states[t] = (states[t - 1] + jumps[t] * moves[t]) % k
    eps = sigma * rng.standard_normal(n)
    body = np.empty(n)
    prev = 0.0
    for t in range(n):  # b_t = phi[z_{t-1}] b_{t-1} + eps_t
        prev = (phis[states[t - 1]] * prev if t else 0.0) + eps[t]
        body[t] = prev
    return Simulated(body, np.zeros(n), np.full(n, sigma), states)


def _markov_expect(p: Mapping[str, Any], obs: Observed) -> np.ndarray:
    phis = np.asarray(p["phi"], dtype=np.float64)
    if obs.states is None:
        raise ValueError("markov oracle: the hidden state path is missing (sidecar 'states')")
    return phis[obs.states] * obs.body


def markov_filter(p: Mapping[str, Any], body: np.ndarray, sigma: float) -> np.ndarray:
    """P(z_t = z | b_0..b_t) [N, K] by Hamilton's (1989) filter: the regime probabilities a
    trader who knows the parameters but not the state can compute."""
    phis = np.asarray(p["phi"], dtype=np.float64)
    k, switch = len(phis), float(p["switch_prob"])
    trans = np.full((k, k), switch / max(k - 1, 1))
    np.fill_diagonal(trans, 1.0 - switch if k > 1 else 1.0)
    out = np.empty((len(body), k))
    prior = np.full(k, 1.0 / k)  # P(z_{t-1} | b_0..b_{t-1})
    prev = 0.0
    for t, b in enumerate(body):  # likelihood of b_t given z_{t-1}: N(phi[z] b_{t-1}, sigma^2)
        lik = np.exp(-0.5 * ((b - phis * prev) / sigma) ** 2) if t else np.ones(k)
        post = prior * lik
        post = post / post.sum() if post.sum() > 0 else np.full(k, 1.0 / k)
        out[t] = post @ trans  # P(z_t | b_0..b_t): the state that drives b_{t+1}
        prior, prev = out[t], b
    return out


def _gap(p: Mapping[str, Any], sigma: float, clock: Clock, rng: np.random.Generator) -> Simulated:
    gap = overnight_gaps(clock, float(p["gap"]) * sigma, rng)
    body = sigma * rng.standard_normal(len(gap)) + _gap_drift(p, gap, clock)
    return Simulated(body, gap, np.full(len(gap), sigma))


def _gap_drift(p: Mapping[str, Any], gap: np.ndarray, clock: Clock) -> np.ndarray:
    """follow * G / m on bars 1..m of each session (G its opening gap), 0 elsewhere."""
    m = int(p["bars"])
    session = np.cumsum(clock.first) - 1
    opening = np.flatnonzero(clock.first)
    slot = np.arange(len(gap)) - opening[session]
    today = gap[opening[session]]
    return np.where((slot >= 1) & (slot <= m), float(p["follow"]) * today / m, 0.0)


def _gap_expect(p: Mapping[str, Any], obs: Observed) -> np.ndarray:
    drift = _gap_drift(p, obs.gap, obs.clock)
    nxt = np.zeros(len(drift))
    nxt[:-1] = drift[1:]  # 0 where bar t+1 opens a session (its gap is not known at t)
    return nxt


def _noise(p: Mapping[str, Any], sigma: float, clock: Clock, rng: np.random.Generator) -> Simulated:
    body = sigma * rng.standard_normal(len(clock.first))
    return Simulated(body, np.zeros_like(body), np.full_like(body, sigma))


def _trailing_sum(x: np.ndarray, h: int) -> np.ndarray:
    """x_t + ... + x_{t-h+1} (fewer terms at the start)."""
    c = np.cumsum(x)
    out = c.copy()
    out[h:] -= c[:-h]
    return out


@dataclass(frozen=True)
class Observed:
    """What an oracle reads: bodies and gaps from the bars, the session clock, the base
    sigma, and the hidden state path where the kind has one."""

    body: np.ndarray
    gap: np.ndarray
    clock: Clock
    sigma: float
    states: np.ndarray | None = None


Simulate = Callable[[Mapping[str, Any], float, Clock, np.random.Generator], Simulated]
Expect = Callable[[Mapping[str, Any], Observed], np.ndarray]

SIMULATE: dict[str, Simulate] = {
    "ar": _ar,
    "seasonal": _seasonal,
    "vol_ar": _vol_ar,
    "markov": _markov,
    "gap": _gap,
    "noise": _noise,
}
EXPECT: dict[str, Expect] = {
    "ar": _ar_expect,
    "seasonal": _seasonal_expect,
    "vol_ar": _vol_ar_expect,
    "markov": _markov_expect,
    "gap": _gap_expect,
    "noise": lambda p, obs: np.zeros(len(obs.body)),
}
