"""Scoring of the research prototype: 64-bar test windows, fractions of the oracle by kind,
paired hierarchical-bootstrap CIs (tasks, then windows within a task)."""

from __future__ import annotations

import numpy as np

from experiments.regimes.tasks import TaskSet

WINDOW = 64
FRACTION_KINDS = ("ar", "seasonal", "vol_ar", "markov", "gap")  # noise: oracle 0, excluded


def window_pnl(pos: np.ndarray, ts: TaskSet) -> np.ndarray:
    """P&L [T, W] (fraction of price, zero costs) of positions [T, N] on the test windows:
    decisions on rows s .. s+63 of each window, each earning the next bar's body."""
    n = pos.shape[1]
    w = (n - ts.test_start) // WINDOW
    rows = slice(ts.test_start, ts.test_start + w * WINDOW)
    earned = pos[:, rows] * ts.nxt.numpy()[:, rows]
    return earned.reshape(len(pos), w, WINDOW).sum(-1)


ENTRY_COST, EXIT_COST = 25.0 / 1e6, 35.0 / 1e6
"""the default brokerage (25 / 35 INR an order) on an all-equity position of C0 = 1e6 INR,
as a fraction of the capital (approximate: the notional is C0)"""


def window_costs(pos: np.ndarray, ts: TaskSet) -> np.ndarray:
    """Approximate default costs [T, W] of positions [T, N] on the test windows: each window
    starts flat and ends flat (the ledger closes an open position at its end); with the
    session square-off a position is closed at every session's last bar."""
    n = pos.shape[1]
    w = (n - ts.test_start) // WINDOW
    rows = np.arange(ts.test_start, ts.test_start + w * WINDOW)
    out = np.zeros((len(pos), w))
    for i, b in enumerate(ts.bars):
        last = np.append(b.clock.first[1:], True)  # the session's last bar
        p = pos[i, rows].reshape(w, WINDOW)
        held = np.zeros_like(p)  # position held into each decision
        held[:, 1:] = np.where(last[rows].reshape(w, WINDOW)[:, 1:], 0.0, p[:, :-1])
        squared = np.abs(p[:, :-1]) * last[rows].reshape(w, WINDOW)[:, 1:]  # closed at close
        change = np.abs(p - held)
        entries = np.where(p != 0, np.minimum(change, 1.0), 0.0)
        exits = np.where(held != 0, np.minimum(change, 1.0), 0.0)
        final = np.abs(p[:, -1])
        out[i] = ENTRY_COST * entries.sum(1) + EXIT_COST * (exits.sum(1) + squared.sum(1) + final)
    return out


def _boot_idx(groups: list[np.ndarray], n_win: int, reps: int, rng: np.random.Generator):
    """Per replicate: tasks resampled within each group, windows within each task."""
    for _ in range(reps):
        tasks = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        wins = rng.integers(n_win, size=(len(tasks), n_win))
        yield tasks, wins


def summarise(pnl: dict[str, np.ndarray], ts: TaskSet, *, reps: int = 1000, seed: int = 0) -> dict:
    """Per method: oracle fraction by kind, mean over kinds, noise-task P&L, and (for pairs
    ``A-B`` requested by the caller via ``differences``) paired CIs."""
    kinds = np.array(ts.kinds)
    oracle = pnl["oracle"]
    out: dict = {"by_kind": {}, "mean_over_kinds": {}, "noise_pnl_bps": {}}
    present = [k for k in FRACTION_KINDS if (kinds == k).any()]
    for name, v in pnl.items():
        fr = {k: float(v[kinds == k].mean() / oracle[kinds == k].mean()) for k in present}
        out["by_kind"][name] = {k: round(x, 3) for k, x in fr.items()}
        out["mean_over_kinds"][name] = round(float(np.mean(list(fr.values()))), 3)
        if (kinds == "noise").any():
            out["noise_pnl_bps"][name] = round(float(v[kinds == "noise"].mean() * 1e4), 3)
    return out


def paired_ci(
    a: np.ndarray, b: np.ndarray, ts: TaskSet, *, reps: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over tasks and windows of a - b [T, W] (fraction of price, x 1e4 = bps per
    window) with its 95% hierarchical-bootstrap interval (tasks, then windows)."""
    d = (a - b) * 1e4
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(d))]
    stats = [d[t[:, None], w].mean() for t, w in _boot_idx(groups, d.shape[1], reps, rng)]
    return (
        round(float(d.mean()), 3),
        round(float(np.quantile(stats, 0.025)), 3),
        round(float(np.quantile(stats, 0.975)), 3),
    )


def kind_fraction_ci(
    v: np.ndarray, oracle: np.ndarray, ts: TaskSet, *, reps: int = 500, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Per kind: fraction of the oracle [estimate, 2.5%, 97.5%] (ratio of means)."""
    kinds = np.array(ts.kinds)
    rng = np.random.default_rng(seed)
    out = {}
    for k in FRACTION_KINDS:
        sel = np.flatnonzero(kinds == k)
        if not len(sel):
            continue
        vals = []
        for t, w in _boot_idx([sel], v.shape[1], reps, rng):
            vals.append(v[t[:, None], w].mean() / oracle[t[:, None], w].mean())
        est = v[sel].mean() / oracle[sel].mean()
        out[k] = (
            round(float(est), 3),
            round(float(np.quantile(vals, 0.025)), 3),
            round(float(np.quantile(vals, 0.975)), 3),
        )
    return out
