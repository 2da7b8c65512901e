"""One figure over several training seeds: the per-seed values, their spread, and the pooled
figure with an interval that counts the seed-to-seed variation.

Why: a figure from one training seed mixes the method with the luck of that seed. Running
the protocol once per seed (``--seeds 0 1 2``) and pooling shows both: the spread says how
much a seed moves the figure, the pooled interval how sure the mean over seeds is.

Pooled interval: a two-stage bootstrap (Davison & Hinkley 1997, section 3.8), as for tasks
and windows: replicate b draws S seeds with replacement, then takes each drawn seed's own
bootstrap replicate b (its protocol's resample of days or tasks), and averages them. With
few seeds the seed stage has few distinct draws (3 seeds: 10): read the interval as rough.
The meta-test's rows pool with ``pool_evaluations``; the walk-forward's with
``pool_walkforwards`` (every seed's stitched days resampled together, so the day draw of
replicate b is the same for every seed); ``write_seed_report`` writes either as a table,
CSV and JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from arch.bootstrap import StationaryBootstrap
from numpy.typing import ArrayLike

from metatrade.evaluation.bootstrap import ConfidenceInterval, block_length, percentile_interval
from metatrade.io import atomic_write_text, json_safe

if TYPE_CHECKING:
    from metatrade.evaluation.protocol_result import EvaluationResult
    from metatrade.evaluation.walkforward import WalkForwardResult


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


def pool_walkforwards(
    results: Mapping[int, WalkForwardResult],
    *,
    rng: np.random.Generator,
    reps: int = 1000,
    confidence: float = 0.95,
) -> dict[str, SeedPool]:
    """The pooled scope's annualised Sharpe of every row, pooled over training seeds
    (seed -> that seed's walk-forward on the same tasks and folds). Each seed's replicates
    come from one stationary bootstrap over the days every seed traded (the columns of all
    seeds side by side, so a replicate draws the same days for each; mean block
    ``block_length`` of them), then ``pool_seeds``."""
    seeds = list(results)
    first = results[seeds[0]]
    labels = [k for k in first.labels if all(k in r.labels for r in results.values())]
    daily = pd.concat(
        {s: results[s].pooled.daily[labels] for s in seeds}, axis=1, join="inner"
    ).fillna(0.0)
    x = daily.to_numpy(dtype=np.float64)  # [days, seeds x labels]
    periods = float(np.mean([t.sessions_per_year for t in first.tasks]))

    def sharpe(data: np.ndarray) -> np.ndarray:
        sd = data.std(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sd > 1e-15, data.mean(axis=0) / sd, 0.0) * math.sqrt(periods)

    est = sharpe(x)
    # arch types the mean block length as int; a real mean is valid (it uses 1 / block)
    boot = StationaryBootstrap(block_length(x), x, seed=rng)  # type: ignore[arg-type]
    replicates = boot.apply(sharpe, reps)  # [reps, seeds x labels]
    n = len(labels)
    return {
        label: pool_seeds(
            {s: float(est[i * n + j]) for i, s in enumerate(seeds)},
            {s: replicates[:, i * n + j] for i, s in enumerate(seeds)},
            rng=rng,
            confidence=confidence,
        )
        for j, label in enumerate(labels)
    }


def seed_rows(pools: Mapping[str, SeedPool], *, scale: float = 1.0) -> list[dict[str, Any]]:
    """One record per row: each seed's value, the spread (sd), the pooled figure and its
    interval (all times ``scale``, e.g. 100 for percent)."""
    out = []
    for label, pool in pools.items():
        rec: dict[str, Any] = {"row": label}
        rec |= {f"seed_{s}": scale * v for s, v in pool.per_seed.items()}
        rec |= {
            "spread_sd": scale * pool.spread,
            "pooled": scale * pool.pooled.estimate,
            "pooled_ci_low": scale * pool.pooled.low,
            "pooled_ci_high": scale * pool.pooled.high,
        }
        out.append(rec)
    return out


def seed_table(pools: Mapping[str, SeedPool], *, title: str, scale: float = 1.0) -> str:
    """A fixed-width text table of ``seed_rows`` under ``title``."""
    rows = seed_rows(pools, scale=scale)
    head = list(rows[0]) if rows else ["row"]
    cells = [head] + [
        [r[k] if isinstance(r[k], str) else f"{r[k]:+.3f}" for k in head] for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([title, *lines])


def write_seed_report(
    out_dir: str | Path,
    prefix: str,
    pools: Mapping[str, SeedPool],
    *,
    title: str,
    scale: float = 1.0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """``<prefix>.txt`` (``seed_table``), ``.csv`` (``seed_rows``) and ``.json`` (every
    pool's ``as_dict``, the title, scale and ``extra``) in ``out_dir``, written atomically."""
    out = Path(out_dir)
    rows = seed_rows(pools, scale=scale)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["row"])
    writer.writeheader()
    writer.writerows(json_safe(rows))
    doc = {"title": title, "scale": scale, **(extra or {})}
    doc["rows"] = {k: p.as_dict() for k, p in pools.items()}
    return {
        "txt": atomic_write_text(
            out / f"{prefix}.txt", seed_table(pools, title=title, scale=scale) + "\n"
        ),
        "csv": atomic_write_text(out / f"{prefix}.csv", buf.getvalue()),
        "json": atomic_write_text(
            out / f"{prefix}.json", json.dumps(json_safe(doc), indent=1) + "\n"
        ),
    }
