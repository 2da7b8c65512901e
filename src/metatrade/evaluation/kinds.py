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

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metatrade.data.synthetic import OracleRule
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.bootstrap import ConfidenceInterval, percentile_interval
from metatrade.io import atomic_write_text, json_safe

if TYPE_CHECKING:
    from metatrade.evaluation.protocol_result import EvaluationResult

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


ORACLE_NOTE = (
    "the oracle holds the sign of each task's true expected next return; on markov tasks it "
    "knows the hidden state (a filter that infers it earns less)"
)


def kinds_report(
    returns: Mapping[str, np.ndarray],
    oracle_returns: np.ndarray,
    kinds: list[str],
    *,
    seed: int = 0,
    num_resamples: int = 1000,
) -> dict[str, object]:
    """Every row's figures by kind, JSON-able: {"kinds", "tasks_per_kind", "note", "rows":
    {label: {"fractions": {kind: CI dict}, "mean_fraction", "flat_returns": {kind: mean
    return per window}}}}. Each row resamples with the same ``seed`` (paired draws)."""
    rows = {}
    for label, values in returns.items():
        s = kind_summary(values, oracle_returns, kinds, seed=seed, num_resamples=num_resamples)
        rows[label] = {
            "fractions": {k: ci.as_dict() for k, ci in s.fractions.items()},
            "mean_fraction": s.mean_fraction,
            "flat_returns": s.flat_returns,
        }
    counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    return {"kinds": list(counts), "tasks_per_kind": counts, "note": ORACLE_NOTE, "rows": rows}


def format_kinds(report: Mapping[str, object]) -> str:
    """The report of ``kinds_report`` as plain text: a line per row, its oracle fraction by
    kind and the mean over those kinds, then its mean return per window (%) on flat-oracle
    kinds."""
    rows: dict = report["rows"]  # type: ignore[assignment]
    first = next(iter(rows.values()))
    order, flat = list(first["fractions"]), list(first["flat_returns"])
    head = f"{'oracle fraction by kind':<24}" + "".join(f"{k:>10}" for k in order)
    lines = [head + f"{'mean':>8}" + "".join(f"{k + ' %':>12}" for k in flat)]
    for label, r in rows.items():
        line = f"{label:<24}" + "".join(f"{r['fractions'][k]['estimate']:>10.3f}" for k in order)
        line += f"{r['mean_fraction']:>8.3f}"
        lines.append(line + "".join(f"{100 * r['flat_returns'][k]:>+12.4f}" for k in flat))
    counts = ", ".join(f"{k} {n}" for k, n in report["tasks_per_kind"].items())  # type: ignore[attr-defined]
    lines.append(f"tasks: {counts}; noise in absolute return; {report['note']}")
    return "\n".join(lines)


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


def save_kinds_report(
    result: EvaluationResult, oracle: Mapping[TaskId, OracleRule] | None, out_dir: str | Path
) -> str | None:
    """With an oracle of several kinds (the regime family): write ``evaluation_kinds.json``
    and ``.txt`` (``kinds_report`` of every row of ``result``) into ``out_dir`` and return
    the text; None (nothing written) otherwise."""
    if oracle is None or result.oracle_returns is None:
        return None
    kinds = task_kinds(result.tasks, oracle)
    if len(set(kinds)) < 2:
        return None
    report = kinds_report(result.returns, result.oracle_returns, kinds)
    text = format_kinds(report)
    out = Path(out_dir)
    atomic_write_text(out / "evaluation_kinds.json", json.dumps(json_safe(report), indent=1))
    atomic_write_text(out / "evaluation_kinds.txt", text + "\n")
    return text
