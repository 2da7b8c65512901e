"""Oracle fractions by kind of structure (issue 19's acceptance figures) from a meta-test
``EvaluationResult`` on the synthetic regime family.

For each row and kind: the row's mean test-window return over that kind's tasks divided by
the oracle's on the same windows (a paired ratio of means), with a 95% hierarchical
bootstrap interval (the kind's tasks, then windows within a task). The headline is the mean
of these fractions over the kinds whose oracle trades. ``noise`` tasks have a flat oracle
(nothing to predict): they are reported in absolute return and excluded from the fractions.
For ``markov`` tasks the oracle knows the hidden state (``TaskRule.positions``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from metatrade.data.synthetic import OracleRule
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.bootstrap import ConfidenceInterval, percentile_interval

FLAT_KINDS = ("noise",)
"""kinds whose oracle is flat: reported in absolute return, excluded from fractions"""


@dataclass
class KindSummary:
    """One row's figures by kind: ``fractions[kind]`` (CI of the oracle fraction),
    ``mean_fraction`` (mean of the estimates over the fraction kinds) and ``flat_returns``
    [kind] (mean return per window on kinds with a flat oracle)."""

    fractions: dict[str, ConfidenceInterval]
    mean_fraction: float
    flat_returns: dict[str, float]


def task_kinds(tasks: list[str], oracle: Mapping[TaskId, OracleRule]) -> list[str]:
    """The kind of each task name of an ``EvaluationResult`` (``"Reg001_ar:5"``)."""
    by_name = {str(t): rule.kind for t, rule in oracle.items()}
    missing = [t for t in tasks if t not in by_name]
    if missing:
        raise KeyError(f"no true rule for tasks {missing}: pass the oracle the protocol used")
    return [by_name[t] for t in tasks]


def kind_summary(
    returns: np.ndarray,
    oracle_returns: np.ndarray,
    kinds: list[str],
    *,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> KindSummary:
    """Figures by kind of one row: ``returns`` and ``oracle_returns`` [T, E] on the same
    windows, ``kinds`` [T]."""
    kinds_arr = np.asarray(kinds)
    rng = np.random.default_rng(seed)
    fractions: dict[str, ConfidenceInterval] = {}
    flat: dict[str, float] = {}
    for kind in dict.fromkeys(kinds):
        sel = np.flatnonzero(kinds_arr == kind)
        if kind in FLAT_KINDS:
            flat[kind] = float(returns[sel].mean())
            continue
        reps = np.empty(num_resamples)
        width = returns.shape[1]
        for b in range(num_resamples):
            t = rng.choice(sel, size=len(sel))[:, None]
            w = rng.integers(width, size=(len(sel), width))
            reps[b] = returns[t, w].mean() / oracle_returns[t, w].mean()
        estimate = float(returns[sel].mean() / oracle_returns[sel].mean())
        fractions[kind] = percentile_interval(reps[np.isfinite(reps)], estimate, confidence)
    mean = float(np.mean([ci.estimate for ci in fractions.values()])) if fractions else np.nan
    return KindSummary(fractions, mean, flat)


def kind_table(
    result_returns: Mapping[str, np.ndarray],
    oracle_returns: np.ndarray,
    kinds: list[str],
    *,
    seed: int = 0,
) -> str:
    """Plain-text table: one line per row label, its fraction by kind and mean over kinds."""
    order = [k for k in dict.fromkeys(kinds) if k not in FLAT_KINDS]
    head = f"{'row':<22}" + "".join(f"{k:>10}" for k in order) + f"{'mean':>8}"
    lines = [head + "".join(f"{k + ' %':>12}" for k in dict.fromkeys(kinds) if k in FLAT_KINDS)]
    for label, values in result_returns.items():
        s = kind_summary(values, oracle_returns, kinds, seed=seed, num_resamples=200)
        line = f"{label:<22}" + "".join(f"{s.fractions[k].estimate:>10.2f}" for k in order)
        line += f"{s.mean_fraction:>8.2f}" + "".join(
            f"{100 * v:>12.3f}" for v in s.flat_returns.values()
        )
        lines.append(line)
    return "\n".join(lines)
