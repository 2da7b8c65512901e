"""One figure over several training seeds: the per-seed values, their spread, and the pooled
figure with an interval that counts the seed-to-seed variation.

Why: a figure from one training seed mixes the method with the luck of that seed. Running
the protocol once per seed (``--seeds 0 1 2``) and pooling shows both: the spread says how
much a seed moves the figure, the pooled interval how sure the mean over seeds is.

Pooled interval: a two-stage bootstrap (Davison & Hinkley 1997, section 3.8), as for tasks
and windows: replicate b draws S seeds with replacement, then takes each drawn seed's own
bootstrap replicate b (its protocol's resample of days or tasks), and averages them. With
few seeds the seed stage has few distinct draws (3 seeds: 10): read the interval as rough.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from metatrade.evaluation.bootstrap import ConfidenceInterval, percentile_interval

if TYPE_CHECKING:
    from metatrade.evaluation.protocol_result import EvaluationResult


@dataclass(frozen=True)
class SeedPool:
    """A figure over training seeds: ``per_seed`` values, ``pooled`` (their mean, with the
    two-stage interval), ``spread`` (their standard deviation, ddof 1; 0 for one seed)."""

    per_seed: dict[int, float]
    pooled: ConfidenceInterval
    spread: float

    @property
    def seeds(self) -> list[int]:
        return list(self.per_seed)

    def as_dict(self) -> dict[str, object]:
        return {
            "per_seed": {str(k): v for k, v in self.per_seed.items()},
            "pooled": self.pooled.as_dict(),
            "spread": self.spread,
            "min": min(self.per_seed.values()),
            "max": max(self.per_seed.values()),
        }


def pool_seeds(
    estimates: Mapping[int, float],
    replicates: Mapping[int, ArrayLike],
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
) -> SeedPool:
    """Pool one figure over seeds (module docstring).

    Args:
        estimates: seed -> the figure that seed's run measured.
        replicates: seed -> its bootstrap replicates [B] (the same B for every seed).
        rng: draws the seeds of each replicate.
    """
    seeds = list(estimates)
    if not seeds or set(seeds) != set(replicates):
        raise ValueError(
            f"pool_seeds: estimates for seeds {seeds} and replicates for {list(replicates)} "
            "must name the same, non-empty set of seeds"
        )
    reps = np.stack([np.asarray(replicates[s], dtype=np.float64).ravel() for s in seeds])
    est = np.array([float(estimates[s]) for s in seeds])
    drawn = rng.integers(0, len(seeds), size=(reps.shape[1], len(seeds)))  # [B, S]
    pooled = reps[drawn, np.arange(reps.shape[1])[:, None]].mean(axis=1)  # [B]
    spread = float(est.std(ddof=1)) if len(seeds) > 1 else 0.0
    interval = percentile_interval(pooled, float(est.mean()), confidence)
    return SeedPool(dict(zip(seeds, est.tolist(), strict=True)), interval, spread)


def pool_evaluations(
    results: Mapping[int, EvaluationResult], *, rng: np.random.Generator
) -> dict[str, SeedPool]:
    """Every row of the meta-test protocol (``label`` "MAML@k1", "flat", ...) pooled over
    the training seeds of ``results`` (seed -> that seed's EvaluationResult)."""
    first = next(iter(results.values()))
    out = {}
    for key in first.replicates:
        kind, _, label = key.partition(":")
        if kind != "return":
            continue
        method, _, k = label.partition("@k")
        est = {
            s: r.row(method, int(k) if k else None).mean_return.estimate for s, r in results.items()
        }
        reps = {s: r.replicates[key] for s, r in results.items()}
        out[label] = pool_seeds(est, reps, rng=rng, confidence=first.config.get("confidence", 0.95))
    return out
