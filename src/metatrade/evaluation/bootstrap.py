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

Dependence (``day_bootstrap_means``, ``block_length``): the timeframes of one instrument
trade one market, and every instrument trades the same days, so tasks are not independent
draws. The day bootstrap resamples whole trading days, jointly for every task (a day drawn
brings the windows of every task on it), then (by default) the tasks themselves, each
drawn task keeping the replicate's one day draw; days come in stationary blocks (Politis & Romano 1994,
``arch.bootstrap.StationaryBootstrap``) whose mean length comes from
``arch.bootstrap.optimal_block_length`` (Politis & White 2004; Patton, Politis & White
2009). An interval resting on fewer than ``MIN_BLOCKS`` independent blocks is flagged.
Days are read through ``session_dates``, the one place that maps bars to trading days.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from metatrade.data.task_arrays import TaskArrays

DEFAULT_RESAMPLES = 2000
# Cap on the number of floats gathered per chunk of resamples (keeps memory ~ 160 MB max).
_MAX_GATHER = 20_000_000
MIN_BLOCKS = 30
_MIN_BLOCK_ESTIMATE = 10  # arch's estimator needs a few autocorrelation lags to look at
"""below this many independent blocks an interval is flagged as resting on too little"""


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
    """Percentile interval of bootstrap replicates [B] around a given point estimate.
    Undefined replicates (NaN: e.g. a day draw on which no drawn task has a window,
    ``day_bootstrap_means``) are left out; all undefined gives a NaN interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap: confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return ConfidenceInterval(float(estimate), float("nan"), float("nan"), confidence)
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
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


# ---- resampling whole days (dependence across tasks and in time) -----------------------
def session_dates(arrays: TaskArrays) -> np.ndarray:
    """The trading day of each bar of ``arrays``, datetime64[D] [n]: its session in the
    instrument's exchange calendar (``TaskArrays.sessions``, ``metatrade.data.calendar``:
    a session's date in the exchange's zone, so an FX day ending 17:00 New York or a night
    session is one day; hand-made arrays without sessions: numbered from ``session_end``).
    The one function that maps bars to days: the walk-forward's daily returns and the
    protocol's day bootstrap both read it."""
    return np.asarray(arrays.session_labels(), dtype=np.int64).astype("datetime64[D]")


@dataclass(frozen=True)
class BlockPlan:
    """How a day bootstrap resampled: ``days`` days in stationary blocks of mean length
    ``block`` days; ``blocks`` = days / block, the number of independent blocks."""

    block: float
    days: int

    @property
    def blocks(self) -> float:
        return self.days / self.block

    @property
    def warning(self) -> str | None:
        """A note for the table when the interval rests on fewer than MIN_BLOCKS blocks."""
        if self.blocks >= MIN_BLOCKS:
            return None
        return (
            f"intervals rest on {self.blocks:.1f} independent blocks ({self.days} days in "
            f"blocks of {self.block:.1f}), fewer than {MIN_BLOCKS}: read them as rough"
        )

    def as_dict(self) -> dict[str, float | str | None]:
        return {
            "block_days": self.block,
            "days": self.days,
            "blocks": self.blocks,
            "warning": self.warning,
        }


def block_length(series: ArrayLike, *, floor: float = 1.0) -> float:
    """Mean block length (observations) of a stationary bootstrap of ``series`` [n] or
    [n, k]: ``arch``'s ``optimal_block_length`` of each non-constant column, the largest
    (every column is resampled with the same blocks), at least ``floor``, at most n.
    Below ``_MIN_BLOCK_ESTIMATE`` observations there is nothing to estimate: ``floor``."""
    from arch.bootstrap import optimal_block_length

    x = np.asarray(series, dtype=np.float64)
    x = x.reshape(len(x), -1)
    keep = [j for j in range(x.shape[1]) if np.nanstd(x[:, j]) > 0]
    best = float(floor)
    if len(x) >= _MIN_BLOCK_ESTIMATE and keep:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            est = optimal_block_length(np.nan_to_num(x[:, keep]))["stationary"].to_numpy()
        est = est[np.isfinite(est)]
        if est.size:
            best = max(best, float(est.max()))
    return float(min(max(best, 1.0), max(1, len(x))))


def day_resample_counts(
    num_days: int, *, block: float, num_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """[B, D] how often each of ``num_days`` days is drawn in each of B stationary-block
    resamples of the days (mean block ``block``; ``arch.bootstrap.StationaryBootstrap``)."""
    from arch.bootstrap import StationaryBootstrap

    # arch types the mean block length as int; a real mean is valid (it uses 1 / block)
    bs = StationaryBootstrap(max(1.0, block), np.arange(num_days), seed=rng)  # type: ignore[arg-type]
    counts = np.empty((num_resamples, num_days), dtype=np.int32)
    for b, (pos, _) in enumerate(bs.bootstrap(num_resamples)):
        counts[b] = np.bincount(pos[0], minlength=num_days)
    return counts


def day_bootstrap_means(
    values: ArrayLike,
    days: ArrayLike,
    *,
    min_block: float = 1.0,
    resample_tasks: bool = True,
    num_resamples: int = DEFAULT_RESAMPLES,
    rng: np.random.Generator,
) -> tuple[np.ndarray, BlockPlan]:
    """Bootstrap replicates of the task-mean statistic, resampling whole days jointly.

    Args:
        values: [T, E] or [M, T, E] window values (M rows sharing tasks and windows).
        days: [T, E] the trading day of each window (any sortable labels, e.g.
            ``session_dates`` of its first bar); the same label in two tasks is one day.
        min_block: the shortest mean block (days), e.g. how many days a window spans.
        resample_tasks: also draw the tasks with replacement after the days (a task drawn
            twice keeps its one day draw): the held-out tasks as a sample of tasks, whose
            differences then count too, not only the days'. Default: both stages, which
            measured wider than either alone and covered best (docs/evaluation.md).
        num_resamples: B. rng: the only source of randomness.

    Returns:
        ([B] or [M, B] replicates, the BlockPlan). In replicate b every window of a drawn
        day counts as often as its day was drawn, in every task and row (paired); a task
        with no window on the drawn days drops out of that replicate's mean over tasks.
        The block length is ``block_length`` of the per-day mean of each row.
    """
    v = np.asarray(values, dtype=np.float64)
    single = v.ndim == 2
    v = v[None] if single else v
    labels = np.asarray(days)
    if v.ndim != 3 or labels.shape != v.shape[1:]:
        raise ValueError(
            f"day bootstrap: values {v.shape} need days shaped [T, E], got {labels.shape}"
        )
    if not np.isfinite(v).all():
        raise ValueError("day bootstrap: values contain NaN or inf; check the window returns")
    uniq, day_idx = np.unique(labels, return_inverse=True)
    day_idx = day_idx.reshape(labels.shape)
    num_days = len(uniq)
    # per-day mean of each row (over every task's windows that day): the block estimate
    per_day = (
        np.stack(
            [np.bincount(day_idx.ravel(), weights=m.ravel(), minlength=num_days) for m in v], axis=1
        )
        / np.bincount(day_idx.ravel())[:, None]
    )
    plan = BlockPlan(block_length(per_day, floor=min_block), num_days)
    counts = day_resample_counts(num_days, block=plan.block, num_resamples=num_resamples, rng=rng)
    w = counts[:, day_idx].astype(np.float64)  # [B, T, E]
    den = w.sum(-1)  # [B, T]
    num = np.einsum("bte,mte->mbt", w, v)
    with np.errstate(invalid="ignore", divide="ignore"):
        task_means = np.where(den > 0, num / den, np.nan)  # [M, B, T]
    if resample_tasks:
        drawn = rng.integers(0, v.shape[1], size=(num_resamples, v.shape[1]))
        task_means = task_means[:, np.arange(num_resamples)[:, None], drawn]
    out = np.nanmean(task_means, axis=-1)
    return (out[0] if single else out), plan
