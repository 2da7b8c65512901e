"""The walk-forward meta-test: re-adapt every start before each fold, trade the fold, stitch.

For each held-out task, from ``start`` to its last bar, in folds of F bars: each start
(MAML, pretrained, random) is adapted with k inner steps by an ``Adapter`` on the W bars
that end E bars (embargo) before the fold, then every row trades the fold in the ledger
(``ledger.trade_task``): each start after 0..k steps (k = 0 is the frozen start, never
re-adapted), the classical rows re-fitted on the same rows (``classical``), buy-and-hold
and flat. The folds' records are stitched per ``carry`` mode and
scored (``stats``), per task and pooled, with block-bootstrap intervals over days.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from metatrade import progress
from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.baselines import ClassicalConfig, check_names
from metatrade.evaluation.bootstrap import session_dates
from metatrade.evaluation.protocol import Start
from metatrade.evaluation.walkforward.adapters import Adapter, Params, adaptation_seed
from metatrade.evaluation.walkforward.classical import classical_targets
from metatrade.evaluation.walkforward.folds import (
    Fold,
    FoldSpec,
    WalkForwardTask,
    fold_arrays,
    make_folds,
)
from metatrade.evaluation.walkforward.ledger import Row, RowRecord, trade_task
from metatrade.evaluation.walkforward.stats import daily_returns, record_metrics
from metatrade.market.config import TradingEnvConfig
from metatrade.market.costs import CostModel
from metatrade.seeding import derive_seed

REFERENCES = {"buy_and_hold": "buy-and-hold", "flat": "flat"}


@dataclass
class WalkForwardConfig:
    """Knobs of the walk-forward protocol (docs/evaluation.md)."""

    folds: FoldSpec = field(default_factory=FoldSpec)
    start: str | int = "validation"
    """first decision row: a split name of each task, a row index or a date"""
    carry: bool = True
    """carry position and equity across folds (live account) or flatten at fold ends"""
    deterministic: bool = True
    """trade the policy's mode (True) or sample its actions (seeded)"""
    references: tuple[str, ...] = ("buy_and_hold", "flat")
    classical: tuple[str, ...] = ()
    """classical adaptive rows (``baselines.CLASSICAL``), re-fitted before every fold"""
    classical_settings: ClassicalConfig = field(default_factory=ClassicalConfig)
    env: TradingEnvConfig = field(default_factory=TradingEnvConfig)
    bootstrap_samples: int = 1000
    block_days: float | None = None
    """mean block length (trading days) of the stationary bootstrap; None: arch's
    ``optimal_block_length`` of the daily returns"""
    confidence: float = 0.95
    configurations: int = 1
    """configurations tried outside the trial registry (before it, or elsewhere): multiplies
    the DSR's number of trials, which otherwise comes from the registry"""
    cost_grid: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)
    """per-side proportional costs (bps) of the cost sweep"""
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.references) - set(REFERENCES)
        if unknown:
            raise ValueError(f"references: unknown {sorted(unknown)}; use {sorted(REFERENCES)}")
        self.classical = check_names(self.classical, "WalkForwardConfig.classical")
        if self.configurations < 1 or self.bootstrap_samples < 10:
            raise ValueError(
                f"configurations={self.configurations} (>= 1), bootstrap_samples="
                f"{self.bootstrap_samples} (>= 10)"
            )


@dataclass
class TaskRecord:
    """Everything the walk-forward produced on one task."""

    task: str
    folds: list[Fold]
    timestamps: np.ndarray  # [n] int64 ns UTC of the stitched bars
    records: dict[str, RowRecord]
    daily: pd.DataFrame  # [days, rows]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    sessions_per_year: float = 252.0  # the market's annualisation of daily figures
    bps_now: float = 0.0  # the costs' mean proportional bps per side (break-even, sweep)
    market: str = ""  # calendar, zone, currency and cost preset, for the report
    adapt_seconds: float = 0.0
    trade_seconds: float = 0.0
    classical_fits: list[dict] = field(default_factory=list)
    """per fold, the classical rules fitted before it (rows, params, in-sample return)"""


def make_rows(
    starts: Mapping[str, Start],
    steps: int,
    references: Sequence[str],
    classical: Sequence[str] = (),
) -> list[Row]:
    """Policy rows ``<start>@k<k>`` for k = 0..steps, the classical rows (labels), then the
    reference rows."""
    rows = [
        Row(f"{name}@k{k}", name, k, policy=s.policy)
        for name, s in starts.items()
        for k in range(steps + 1)
    ]
    rows += [Row(c, c, None) for c in classical]
    return rows + [Row(REFERENCES[r], REFERENCES[r], None) for r in references]


class _FoldCache:
    """Fold f's arrays and adapted parameters, computed once when first asked (one fold
    kept at a time: a 2-minute task's feature matrix is megabytes per fold)."""

    def __init__(
        self,
        task: WalkForwardTask,
        folds: list[Fold],
        spec: FoldSpec,
        starts: Mapping[str, Start],
        adapter: Adapter,
        seed: int,
    ) -> None:
        self.task, self.folds, self.spec = task, folds, spec
        self.starts, self.adapter, self.seed = starts, adapter, seed
        self._f = -1
        self._arrays: TaskArrays | None = None
        self._params: dict[str, list[Params]] = {}
        self.seconds = 0.0
        self.on_fold: progress.Step = lambda detail=None: None  # a fold started

    def arrays(self, f: int) -> TaskArrays:
        if self._arrays is None or f != self._f:
            self._f, self._params = f, {}
            self._arrays = fold_arrays(self.task, self.folds[f], self.spec)
            self.on_fold()
        return self._arrays

    def params(self, f: int, row: Row) -> Params:
        """The parameters of policy row ``row`` (its start after ``row.k`` steps) on fold f."""
        if row.k is None:
            raise ValueError(f"row {row.label} is not a policy row: it has no parameters")
        arrays = self.arrays(f)
        if row.start not in self._params:
            s = self.starts[row.start]
            fold = self.folds[f]
            t0 = time.perf_counter()
            seed = adaptation_seed(self.seed, row.start, str(self.task.task), fold.trade[0])
            adapted = self.adapter(s, arrays, fold.adapt, seed=seed) if self.adapter.steps else []
            self.seconds += time.perf_counter() - t0
            self._params[row.start] = [s.params, *adapted]
        return self._params[row.start][row.k]


def run_task(
    task: WalkForwardTask,
    starts: Mapping[str, Start],
    adapter: Adapter,
    config: WalkForwardConfig,
) -> TaskRecord:
    """Walk forward on one task: folds, adaptation, trading, daily returns."""
    env = config.env
    folds = make_folds(task.arrays, config.folds, config.start, lookback=env.lookback)
    targets, fits = classical_targets(
        task, folds, adapter, config.classical, env=env, settings=config.classical_settings
    )
    rows = make_rows(starts, adapter.steps, config.references, list(targets))
    for r in rows:
        r.targets = targets.get(r.label, r.targets)
        if r.label == "buy-and-hold":
            r.targets = np.ones(len(task), dtype=np.int8)
        elif r.label == "flat":
            r.targets = np.zeros(len(task), dtype=np.int8)
    cache = _FoldCache(task, folds, config.folds, starts, adapter, config.seed)
    trade_seed = derive_seed(config.seed, "walkforward", "trade", str(task.task))
    gen = None if config.deterministic else torch.Generator().manual_seed(trade_seed)
    t0 = time.perf_counter()
    with progress.stage(f"{task.task}: {len(folds)} folds", len(folds)) as cache.on_fold:
        recs = trade_task(
            cache.arrays, folds, rows, cache.params, env, carry=config.carry, generator=gen
        )
    trade_s = time.perf_counter() - t0 - cache.seconds
    first, last = folds[0].trade[0], folds[-1].trade[1]
    ts = task.arrays.timestamps[first : last + 1]
    sessions = session_dates(task.arrays)[first : last + 1]
    c0 = env.initial_capital
    daily = pd.DataFrame(
        {
            r.label: daily_returns(rec.equity, sessions, c0)
            for r, rec in zip(rows, recs, strict=True)
        }
    )
    out = TaskRecord(
        str(task.task), folds, ts, {r.label: rec for r, rec in zip(rows, recs, strict=True)}, daily
    )
    costs, _ = env.market_for(task.arrays)
    out.sessions_per_year = task.arrays.require_market().session_returns_per_year
    out.bps_now = costs.per_side_bps
    out.market = _market_label(task.arrays, costs)
    for label, rec in out.records.items():
        out.metrics[label] = record_metrics(
            rec.equity,
            daily[label],
            c0=c0,
            trades=rec.trades,
            notional=rec.notional,
            bps_now=out.bps_now,
            periods_per_year=out.sessions_per_year,
        )
    out.adapt_seconds, out.trade_seconds = cache.seconds, trade_s
    out.classical_fits = fits
    return out


def _market_label(arrays: TaskArrays, costs: CostModel) -> str:
    """E.g. "NSE (XBOM), Asia/Kolkata, INR, costs origin": the clock and money of a task."""
    m = arrays.require_market()
    return f"{m.instrument.calendar.describe()}, {m.timezone}, {m.currency}, costs {costs.label}"
