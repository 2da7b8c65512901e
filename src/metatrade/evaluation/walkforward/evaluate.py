"""``run_walkforward``: every task walked forward, then scored per task and pooled.

Pooled = an equal-weight portfolio of the held-out tasks, rebalanced daily: its daily
return is the mean over the tasks trading that day of their daily returns. Its cost
break-even is computed on the tasks' summed P&L and notional; its turnover is the mean of
the tasks'. Intervals: stationary block bootstrap over days, the same days for every row,
blocks as long as ``arch``'s ``optimal_block_length`` says. Every policy row of every scope
is recorded as a trial of that scope's data set (``TrialLog``), and the DSR's N, the trials'
Sharpe variance and PBO are read back from the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from metatrade import progress
from metatrade.evaluation.baselines import SELECTED_LABEL
from metatrade.evaluation.bootstrap import BlockPlan, ConfidenceInterval
from metatrade.evaluation.protocol import Start
from metatrade.evaluation.registry import TrialLog, covered_splits, data_hash
from metatrade.evaluation.sealed import Period
from metatrade.evaluation.walkforward.adapters import Adapter
from metatrade.evaluation.walkforward.folds import WalkForwardTask, make_folds
from metatrade.evaluation.walkforward.runner import TaskRecord, WalkForwardConfig, run_task
from metatrade.evaluation.walkforward.stats import (
    add_deflated,
    bootstrap_daily,
    breakeven_bps,
    cost_sweep,
    record_metrics,
    trial_evidence,
)
from metatrade.seeding import derive_seed

POOLED = "pooled"


@dataclass
class Scope:
    """Metrics, intervals and paired differences of one task, or of the pooled portfolio."""

    name: str
    daily: pd.DataFrame
    metrics: dict[str, dict[str, float]]
    cis: dict[str, dict[str, ConfidenceInterval]]
    differences: dict[str, dict[str, ConfidenceInterval]]
    trials: dict[str, Any]
    sweep: dict[str, list[float]]
    bootstrap: BlockPlan | None = None


@dataclass
class WalkForwardResult:
    """What ``run_walkforward`` measured; ``scopes["pooled"]`` is the headline."""

    tasks: list[TaskRecord]
    scopes: dict[str, Scope]
    labels: list[str]
    starts: list[str]
    steps: int
    config: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    period: Period | None = None
    """the split scored and the looks at its test period (``sealed.open_period``), set by
    the command that opened it; every table, CSV row, the JSON and the HTML state it"""

    @property
    def pooled(self) -> Scope:
        return self.scopes[POOLED]

    def rows(self) -> list[dict[str, Any]]:
        """One flat record per (scope, row): metrics and interval bounds (the CSV)."""
        out = []
        for scope in self.scopes.values():
            for label in self.labels:
                start, _, k = label.partition("@k")
                rec: dict[str, Any] = {
                    "scope": scope.name,
                    "row": label,
                    "start": start,
                    "k": int(k) if k else None,
                }
                rec.update(scope.metrics[label])
                rec["split"] = scope.trials.get("split")
                rec["test_looks"] = scope.trials.get("test_looks")
                for stat, ci in scope.cis[label].items():
                    rec[f"{stat}_ci_low"], rec[f"{stat}_ci_high"] = ci.low, ci.high
                out.append(rec)
        return out


def _differences(
    labels: list[str], starts: list[str], steps: int, diff
) -> dict[str, dict[str, ConfidenceInterval]]:
    """Paired intervals: each start re-adapted minus frozen, minus classical-selected, minus
    buy-and-hold; MAML minus every other start at the same k."""
    pairs = []
    for s in starts:
        if steps:
            pairs.append((f"{s}@k{steps}", f"{s}@k0"))
        if SELECTED_LABEL in labels:
            pairs.append((f"{s}@k{steps}", SELECTED_LABEL))
        if "buy-and-hold" in labels:
            pairs.append((f"{s}@k{steps}", "buy-and-hold"))
    if starts:
        head = starts[0]
        pairs += [(f"{head}@k{steps}", f"{s}@k{steps}") for s in starts[1:]]
    return {
        f"{a} - {b}": {st: diff(st, a, b) for st in ("sharpe", "annual_return")} for a, b in pairs
    }


@dataclass(frozen=True)
class _Evidence:
    """Where a scope's trials go: the log (None: no registry), its data set and split;
    ``record`` False when a scope of this run already recorded them under the same hash
    (the pooled scope of one task is that task)."""

    log: TrialLog | None
    data_hash: str
    split: str
    record: bool = True


def _scope(
    name: str,
    daily: pd.DataFrame,
    metrics: dict,
    pnl: dict,
    notional: dict,
    capital: float,
    cfg: WalkForwardConfig,
    starts: list[str],
    steps: int,
    evidence: _Evidence,
    clock: tuple[float, float],
) -> Scope:
    """Trials, DSR, PBO, bootstrap intervals, paired differences and cost sweep of a scope;
    ``clock`` = (sessions per year, the costs' proportional bps per side now)."""
    periods, bps = clock
    labels = list(daily.columns)
    arrays = {k: daily[k].dropna().to_numpy() for k in labels}
    policy = [k for k in labels if "@k" in k]
    found = trial_evidence(
        daily,
        policy,
        log=evidence.log,
        data_hash=evidence.data_hash,
        split=evidence.split,
        record=evidence.record,
    )
    trials = add_deflated(metrics, arrays, found, cfg.configurations)
    seed = derive_seed(cfg.seed, "walkforward", "bootstrap", name)
    cis, diff, plan = bootstrap_daily(
        daily.to_numpy(),
        labels,
        reps=cfg.bootstrap_samples,
        block_days=cfg.block_days,
        seed=seed,
        periods_per_year=periods,
        confidence=cfg.confidence,
    )
    grid = np.asarray(cfg.cost_grid)
    sweep = {k: cost_sweep(pnl[k], notional[k], bps, capital, grid).tolist() for k in labels}
    diffs = _differences(labels, starts, steps, diff)
    return Scope(name, daily, metrics, cis, diffs, trials, sweep, plan)


def _pooled(
    tasks: list[TaskRecord],
    labels: list[str],
    cfg: WalkForwardConfig,
    starts,
    steps,
    evidence: _Evidence,
) -> Scope:
    c0 = cfg.env.initial_capital
    daily = pd.concat([t.daily for t in tasks], keys=range(len(tasks))).groupby(level=1).mean()
    daily = daily.sort_index()
    pnl = {k: sum(t.records[k].equity[-1] - c0 for t in tasks) for k in labels}
    notional = {k: sum(t.records[k].notional for t in tasks) for k in labels}
    # Tasks of different markets: the mean of their sessions per year and of their costs.
    clock = (
        float(np.mean([t.sessions_per_year for t in tasks])),
        float(np.mean([t.bps_now for t in tasks])),
    )
    metrics = {}
    for k in labels:
        eq = c0 * np.concatenate([[1.0], np.cumprod(1.0 + daily[k].to_numpy())])
        trades = [tr for t in tasks for tr in t.records[k].trades]
        m = record_metrics(
            eq,
            daily[k],
            c0=c0,
            trades=trades,
            notional=notional[k],
            bps_now=clock[1],
            periods_per_year=clock[0],
        )
        m["breakeven_bps"] = breakeven_bps(pnl[k], notional[k], clock[1])
        m["turnover"] = float(np.mean([t.metrics[k]["turnover"] for t in tasks]))
        metrics[k] = m
    capital = c0 * len(tasks)
    return _scope(
        POOLED, daily, metrics, pnl, notional, capital, cfg, starts, steps, evidence, clock
    )


def _walk_tasks(
    one_task: Callable[[WalkForwardTask], TaskRecord],
    tasks: Sequence[WalkForwardTask],
    cfg: WalkForwardConfig,
    task_map: Callable[[Callable[..., Any], Sequence[Any]], list[Any]] | None,
) -> list[TaskRecord]:
    """``one_task`` on every task: through ``task_map`` (its folds checked here first), or
    in-process with a progress bar."""
    if task_map is not None:  # the workers report nothing back until they are done
        for t in tasks:  # a geometry that does not fit: the user's error here, not a worker's
            make_folds(t.arrays, cfg.folds, cfg.start, lookback=cfg.env.lookback)
        return list(task_map(one_task, list(tasks)))
    records = []
    with progress.stage(f"walk-forward: {len(tasks)} tasks", len(tasks)) as step:
        for t in tasks:
            records.append(one_task(t))
            step(str(t.task))
    return records


def _settings(
    cfg: WalkForwardConfig, adapter: Adapter, records: Sequence[TaskRecord]
) -> dict[str, Any]:
    """The settings a walk-forward result records (and its trials are registered with)."""
    conf = {k: v for k, v in asdict(cfg).items() if k not in ("env",)}
    conf.update(
        initial_capital=cfg.env.initial_capital,
        lookback=cfg.env.lookback,
        steps=adapter.steps,
        ruin_fraction=cfg.env.ruin_fraction,
        markets={r.task: r.market for r in records},
        adapter=type(adapter).__name__,
    )
    return conf


def _task_scope(
    rec: TaskRecord,
    labels: list[str],
    cfg: WalkForwardConfig,
    names: list[str],
    steps: int,
    found: _Evidence,
) -> Scope:
    """The scope of one task: its rows' daily returns, metrics, P&L and intervals."""
    c0 = cfg.env.initial_capital
    pnl = {k: rec.records[k].equity[-1] - c0 for k in labels}
    notional = {k: rec.records[k].notional for k in labels}
    clock = (rec.sessions_per_year, rec.bps_now)
    return _scope(
        rec.task, rec.daily, rec.metrics, pnl, notional, c0, cfg, names, steps, found, clock
    )


def run_walkforward(
    starts: Mapping[str, Start],
    tasks: Sequence[WalkForwardTask],
    adapter: Adapter,
    config: WalkForwardConfig | None = None,
    *,
    task_map: Callable[[Callable[..., Any], Sequence[Any]], list[Any]] | None = None,
    trials: TrialLog | None = None,
    whole: Sequence[WalkForwardTask] | None = None,
) -> WalkForwardResult:
    """Walk every task forward (``runner.run_task``) and score per task and pooled.

    ``task_map``: how the per-task work is mapped over the tasks (default in-process;
    ``metatrade.distributed.fanout.ray_task_map`` fans it out over Ray workers, with the
    same records bit for bit: every fold is adapted with its own seed).
    ``trials``: the registry that counts this run's policy rows as trials of each scope's
    data set (the DSR's N and PBO come from it); None: this run's rows alone.
    ``whole``: the tasks whose data hash names each data set (default ``tasks``): a walk
    over tasks cut after validation (``cut_after``) passes the uncut tasks, so its trials
    and the test period's looks count on one data set."""
    cfg = config or WalkForwardConfig()
    if not tasks:
        raise ValueError("run_walkforward: no tasks; pass the held-out tasks")
    if not starts:
        raise ValueError("run_walkforward: no starts; pass e.g. {'MAML': Start(...)}")
    t0 = time.perf_counter()
    one_task = partial(run_task, starts=starts, adapter=adapter, config=cfg)
    records = _walk_tasks(one_task, tasks, cfg, task_map)
    labels = list(records[0].records)
    names = list(starts)
    conf = _settings(cfg, adapter, records)
    log = trials.with_settings({"walkforward": conf}) if trials is not None else None
    splits = {}
    scopes = {}
    named = {str(t.arrays.task): t.arrays for t in (whole if whole is not None else tasks)}
    for rec, task in zip(records, tasks, strict=True):
        splits[rec.task] = covered_splits(task.arrays, rec.folds[0].trade[0], len(task) - 1)
        found = _Evidence(log, data_hash([named[str(task.arrays.task)]]), splits[rec.task])
        scopes[rec.task] = _task_scope(rec, labels, cfg, names, adapter.steps, found)
    every = data_hash([named[str(t.arrays.task)] for t in tasks])
    pooled = _Evidence(log, every, "+".join(sorted(set(splits.values()))), record=len(tasks) > 1)
    scopes[POOLED] = _pooled(records, labels, cfg, names, adapter.steps, pooled)
    seconds = {
        "adapt": sum(r.adapt_seconds for r in records),
        "trade": sum(r.trade_seconds for r in records),
        "total": time.perf_counter() - t0,
    }
    return WalkForwardResult(records, scopes, labels, names, adapter.steps, conf, seconds)
