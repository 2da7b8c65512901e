"""Percentile bootstrap confidence intervals over episodes, and over tasks then episodes.

Why hierarchical: held-out evaluation has two sources of noise, which tasks were held out and
which test windows were drawn inside each task. Resampling only episodes pretends the tasks
are fixed and gives intervals that are too narrow; so we resample tasks with replacement, then
episodes with replacement inside each resampled task (the "two-stage" bootstrap, Davison &
Hinkley 1997, section 3.8). The statistic is the mean over tasks of the per-task mean, so every
task weighs the same whatever its number of episodes.

Everything is vectorised: one ``Generator`` draws every resample index at once, and several
methods evaluated on the same tasks and episodes (values shaped [M, T, E]) share the resample
indices, so differences between methods are paired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_RESAMPLES = 2000
# Cap on the number of floats gathered per chunk of resamples (keeps memory ~ 160 MB max).
_MAX_GATHER = 20_000_000


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its percentile bootstrap interval [low, high]."""

    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def overlaps(self, other: ConfidenceInterval) -> bool:
        """True when the two intervals share at least one point."""
        return self.low <= other.high and other.low <= self.high

    @property
    def half_width(self) -> float:
        return 0.5 * (self.high - self.low)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def pad_groups(groups: Sequence[ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-task episode values -> (values [T, E_max] float64, mask [T, E_max] bool)."""
    arrays = [np.asarray(g, dtype=np.float64).ravel() for g in groups]
    if not arrays:
        raise ValueError("bootstrap: no tasks given; pass at least one group of episode values")
    width = max(len(a) for a in arrays)
    values = np.zeros((len(arrays), width))
    mask = np.zeros((len(arrays), width), dtype=bool)
    for i, a in enumerate(arrays):
        values[i, : len(a)] = a
        mask[i, : len(a)] = True
    return values, mask


def _check(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counts = mask.sum(axis=1)
    if values.shape[-1] == 0 or (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"bootstrap: task rows {empty} have no episodes; drop them or add some")
    if not np.isfinite(values[..., mask]).all():
        raise ValueError(
            "bootstrap: values contain NaN or inf; check the episode returns fed to the bootstrap"
        )
    return counts


def task_mean(values: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Mean over tasks of the per-task episode mean: values [..., T, E] -> [...]."""
    v = np.asarray(values, dtype=np.float64)
    m = np.ones(v.shape[-2:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    counts = _check(v, m)
    return ((v * m).sum(-1) / counts).mean(-1)


def hierarchical_bootstrap_means(
    values: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    num_resamples: int = DEFAULT_RESAMPLES,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bootstrap replicates of the task-mean statistic.

    Args:
        values: [T, E] or [M, T, E] episode values (M methods sharing tasks and episodes).
        mask: [T, E] True where an episode exists (ragged tasks); default all True.
        num_resamples: B, the number of bootstrap replicates.
        rng: the only source of randomness.

    Returns:
        [B] (or [M, B]) replicate statistics; with M methods, replicate b used the same
        task and episode indices for every method (paired).
    """
    v = np.asarray(values, dtype=np.float64)
    single = v.ndim == 2
    if single:
        v = v[None]
    if v.ndim != 3:
        raise ValueError(f"bootstrap: values must be [T, E] or [M, T, E], got shape {v.shape}")
    num_methods, num_tasks, width = v.shape
    m = np.ones((num_tasks, width), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != (num_tasks, width):
        raise ValueError(f"bootstrap: mask shape {m.shape} != values' [T, E] {(num_tasks, width)}")
    counts = _check(v, m)
    # Move each task's valid episodes to the front so that index < count picks a valid one.
    order = np.argsort(~m, axis=1, kind="stable")
    v = np.take_along_axis(v, np.broadcast_to(order, v.shape), axis=2)

    out = np.empty((num_methods, num_resamples))
    chunk = max(1, _MAX_GATHER // max(1, num_methods * num_tasks * width))
    for start in range(0, num_resamples, chunk):
        b = min(chunk, num_resamples - start)
        task_idx = rng.integers(0, num_tasks, size=(b, num_tasks))  # stage 1: tasks
        n = counts[task_idx]  # [b, T]
        # Stage 2: episodes within each resampled task, uniform over its own n episodes.
        ep_idx = np.minimum(
            (rng.random((b, num_tasks, width)) * n[..., None]).astype(np.int64), n[..., None] - 1
        )
        valid = np.arange(width) < n[..., None]  # [b, T, E]: draw exactly n episodes per task
        picked = v[:, task_idx[..., None], ep_idx]  # [M, b, T, E]
        out[:, start : start + b] = ((picked * valid).sum(-1) / n).mean(-1)
    return out[0] if single else out


def percentile_interval(
    replicates: ArrayLike, estimate: float, confidence: float = 0.95
) -> ConfidenceInterval:
    """Percentile interval of bootstrap replicates [B] around a given point estimate."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap: confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    low, high = np.quantile(np.asarray(replicates, dtype=np.float64), [alpha / 2, 1 - alpha / 2])
    # The point estimate lies inside unless the bootstrap distribution is extremely skewed;
    # widen to include it so that a reported interval never excludes its own estimate.
    return ConfidenceInterval(
        float(estimate), float(min(low, estimate)), float(max(high, estimate)), confidence
    )


def hierarchical_bootstrap_ci(
    values: ArrayLike | Sequence[ArrayLike],
    mask: ArrayLike | None = None,
    *,
    confidence: float = 0.95,
    num_resamples: int = DEFAULT_RESAMPLES,
    rng: np.random.Generator,
) -> ConfidenceInterval:
    """95% (by default) CI of the mean over tasks of per-task mean episode values.

    ``values`` is [T, E] (with optional ``mask``) or a list of per-task 1-D arrays (ragged).
    """
    if mask is None and isinstance(values, (list, tuple)):
        v, m = pad_groups(values)
    else:
        v = np.asarray(values, dtype=np.float64)
        m = np.ones(v.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if v.ndim != 2:
        raise ValueError(f"bootstrap: values must be [T, E], got shape {v.shape}")
    reps = hierarchical_bootstrap_means(v, m, num_resamples=num_resamples, rng=rng)
    return percentile_interval(reps, float(task_mean(v, m)), confidence)


def bootstrap_ci(
    values: ArrayLike,
    *,
    confidence: float = 0.95,
    num_resamples: int = DEFAULT_RESAMPLES,
    rng: np.random.Generator,
) -> ConfidenceInterval:
    """Percentile bootstrap CI of the mean of one flat sample (e.g. episodes of one task)."""
    v = np.asarray(values, dtype=np.float64).ravel()[None, :]
    return hierarchical_bootstrap_ci(v, confidence=confidence, num_resamples=num_resamples, rng=rng)
