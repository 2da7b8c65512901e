"""Balanced sampling of a meta-batch of tasks.

Scheme (greedy, one task at a time): among the pool, pick a task that minimises, in order,
(1) how often this task is already in the batch, (2) how often its instrument is, (3) how
often its timeframe is; ties are broken by a random key drawn once per call from ``rng``.
Consequences: no task repeats while n <= pool size (and for n > pool every task appears
floor(n/pool) or ceil(n/pool) times); instrument counts differ by at most one when every
instrument has enough tasks; timeframes are spread as evenly as the instruments allow.
Same ``rng`` seed and pool -> same batch.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from metatrade.data.task_arrays import TaskId


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Accept a Generator, an int seed, or None (fresh OS entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def balanced_sample(
    pool: list[TaskId], n: int, rng: np.random.Generator | int | None = None
) -> list[TaskId]:
    """``n`` tasks from ``pool`` by the scheme above, in the order picked."""
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    if not pool:
        raise ValueError("no tasks to sample from; check the data folder and the held-out config")
    gen = as_generator(rng)
    tie = gen.permutation(len(pool))
    uses: Counter = Counter()
    inst: Counter = Counter()
    tf: Counter = Counter()
    out: list[TaskId] = []
    for _ in range(n):
        best = min(
            range(len(pool)),
            key=lambda i: (uses[pool[i]], inst[pool[i].instrument], tf[pool[i].timeframe], tie[i]),
        )
        t = pool[best]
        out.append(t)
        uses[t] += 1
        inst[t.instrument] += 1
        tf[t.timeframe] += 1
        if len(out) % len(pool) == 0:
            tie = gen.permutation(len(pool))  # a fresh order for the next pass over the pool
    return out
