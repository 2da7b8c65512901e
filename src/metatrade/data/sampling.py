"""Balanced sampling of a meta-batch of tasks.

Scheme ("shifted diagonals" over the instrument x timeframe grid): randomly permute the
pool's I instruments and T timeframes, then walk the grid cells in the order

    cell k -> (instrument k mod I, timeframe (k + b) mod T),   b = block index of k, k < I*T,

where blocks have length L = lcm(I, T) and are taken in a random order. Each block visits
L distinct cells (one diagonal family), and every run of consecutive cells uses instruments
and timeframes evenly, so on a complete grid *every prefix* of the walk has instrument counts
within 1 of each other and timeframe counts within 1 of each other, with no task repeated.
Cells not in the pool (held-out or missing tasks) are skipped. A batch is the first n tasks of
the walk; when n exceeds the pool, a fresh walk (new permutations) is appended, so each task
appears floor(n/pool) or ceil(n/pool) times. Everything random comes from ``rng``: the same
seed and pool give the same batch.
"""

from __future__ import annotations

import math

import numpy as np

from metatrade.data.task_arrays import TaskId


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Accept a Generator, an int seed, or None (fresh OS entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _walk(pool: list[TaskId], gen: np.random.Generator) -> list[TaskId]:
    """One pass over the pool in shifted-diagonal order (every task exactly once)."""
    instruments = sorted({t.instrument for t in pool})
    timeframes = sorted({t.timeframe for t in pool}, key=lambda s: (len(s), s))
    inst = [instruments[i] for i in gen.permutation(len(instruments))]
    tfs = [timeframes[i] for i in gen.permutation(len(timeframes))]
    n_i, n_t = len(inst), len(tfs)
    block = math.lcm(n_i, n_t)
    members = set(pool)
    order: list[TaskId] = []
    for b in gen.permutation(n_i * n_t // block):
        for k in range(b * block, (b + 1) * block):
            task = TaskId(inst[k % n_i], tfs[(k + b) % n_t])
            if task in members:
                order.append(task)
    return order


def balanced_sample(
    pool: list[TaskId], n: int, rng: np.random.Generator | int | None = None
) -> list[TaskId]:
    """``n`` tasks from ``pool`` by the scheme above, in walk order."""
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    if not pool:
        raise ValueError("no tasks to sample from; check the data folder and the held-out config")
    gen = as_generator(rng)
    out: list[TaskId] = []
    while len(out) < n:
        out.extend(_walk(list(dict.fromkeys(pool)), gen))
    return out[:n]
