"""What the meta-test protocol measured (``EvaluationResult``) and its outputs: the rich
table, CSV, JSON and the adaptation-curve plot."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metatrade.evaluation.baselines import SELECTED_LABEL, FittedRule, describe
from metatrade.evaluation.bootstrap import BlockPlan, ConfidenceInterval, percentile_interval
from metatrade.evaluation.plots import CurveBand, plot_adaptation_curve
from metatrade.evaluation.protocol_config import Params
from metatrade.evaluation.sealed import Period
from metatrade.io import atomic_write_text, json_safe


@dataclass
class EvaluationRow:
    """One line of the results table."""

    method: str
    k: int | None
    mean_return: ConfidenceInterval
    backtest_return: float | None = None
    oracle_fraction: ConfidenceInterval | None = None
    backtest_oracle_fraction: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"method": self.method, "k": self.k}
        d.update(
            return_mean=self.mean_return.estimate,
            return_ci_low=self.mean_return.low,
            return_ci_high=self.mean_return.high,
            backtest_return=self.backtest_return,
        )
        if self.oracle_fraction is not None:
            d.update(
                oracle_fraction=self.oracle_fraction.estimate,
                oracle_fraction_ci_low=self.oracle_fraction.low,
                oracle_fraction_ci_high=self.oracle_fraction.high,
                backtest_oracle_fraction=self.backtest_oracle_fraction,
            )
        return d


@dataclass
class EvaluationResult:
    """Everything the protocol measured.

    ``returns[label]`` is [T, E] test-window returns (P&L / C0) with label "MAML@k1",
    "buy-and-hold", ...; ``backtests[label]`` [T] whole-split backtest returns;
    ``adapted[(start, k)]`` the adapted parameters [T, ...] (for reports on them).
    """

    tasks: list[str]
    rows: list[EvaluationRow]
    returns: dict[str, np.ndarray]
    backtests: dict[str, np.ndarray]
    oracle_returns: np.ndarray | None
    adapted: dict[tuple[str, int], Params]
    config: dict[str, Any]
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    """tasks the evaluated run meta-trained on (``--allow-seen``): flagged in every output"""
    windows: np.ndarray | None = None
    """[T, E] first decision rows of the test windows every row traded"""
    classical: dict[str, list[FittedRule]] = field(default_factory=dict)
    """the classical rows' fitted rules, {label: [per task]}"""
    warnings: list[str] = field(default_factory=list)
    """what limits how far the intervals can be trusted (``interval_warning``): in every output"""
    bootstrap: BlockPlan | None = None
    """how the day bootstrap resampled (its warning goes under the table)"""
    period: Period | None = None
    """the split scored and the looks at the test period (``sealed.open_period``): stated in
    the table, every CSV row and the JSON"""

    # ---- lookups
    def row(self, method: str, k: int | None = None) -> EvaluationRow:
        for r in self.rows:
            if r.method == method and (k is None or r.k == k):
                return r
        raise KeyError(f"no row {method!r} k={k}; rows: {[(r.method, r.k) for r in self.rows]}")

    def difference(self, a: str, b: str, *, oracle: bool = False) -> ConfidenceInterval:
        """Paired CI of row ``a`` minus row ``b`` (labels like "MAML@k1", "PPO@k1")."""
        key = "fraction" if oracle else "return"
        ra, rb = self.replicates[f"{key}:{a}"], self.replicates[f"{key}:{b}"]
        src = self._normalised() if oracle else self.returns
        est = float(task_mean(src[a]) - task_mean(src[b]))
        return percentile_interval(ra - rb, est, self.config.get("confidence", 0.95))

    def headline(self) -> dict[str, ConfidenceInterval]:
        """Paired CIs of each start after one step (or its first k > 0) minus
        classical-selected: "does adapting beat what a desk does?" (empty without that row)."""
        if SELECTED_LABEL not in self.returns:
            return {}
        steps = sorted({r.k for r in self.rows if r.k is not None})
        k = 1 if 1 in steps else max(steps, default=0)
        starts = dict.fromkeys(r.method for r in self.rows if r.k == k)
        return {
            f"{s}@k{k} - {SELECTED_LABEL}": self.difference(f"{s}@k{k}", SELECTED_LABEL)
            for s in starts
        }

    def _normalised(self) -> dict[str, np.ndarray]:
        assert self.oracle_returns is not None
        denom = task_mean(self.oracle_returns)
        return {k: v / denom for k, v in self.returns.items()}

    # ---- outputs
    def records(self) -> list[dict[str, Any]]:
        """One dict per row; with a ``period``, which split it scored and the looks at the
        test period in every row (a CSV row read alone still says it)."""
        where = {}
        if self.period is not None:
            where = {"split": self.period.split, "test_looks": self.period.test_looks}
        return [r.as_dict() | where for r in self.rows]

    def to_csv(self, path: str | Path) -> Path:
        records = self.records()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
        return atomic_write_text(path, buf.getvalue())

    def to_json(self, path: str | Path) -> Path:
        doc = {
            "tasks": self.tasks,
            "seen_in_meta_training": self.seen,
            "warnings": self.warnings,
            "period": None if self.period is None else self.period.as_dict(),
            "rows": self.records(),
            "config": self.config,
            "paired_differences": {k: ci.as_dict() for k, ci in self.headline().items()},
            "test_windows": None if self.windows is None else self.windows.tolist(),
            "classical_fits": {
                task: describe({k: v[i] for k, v in self.classical.items()})
                for i, task in enumerate(self.tasks)
            },
            "bootstrap": self.bootstrap.as_dict() if self.bootstrap is not None else None,
            "per_task": {
                label: {
                    "test_window_mean": json_safe(v.mean(axis=1).tolist()),
                    "backtest": json_safe(self.backtests[label].tolist())
                    if label in self.backtests
                    else None,
                }
                for label, v in self.returns.items()
            },
        }
        if self.oracle_returns is not None:
            doc["oracle_test_window_mean"] = self.oracle_returns.mean(axis=1).tolist()
        return atomic_write_text(path, json.dumps(json_safe(doc), indent=2) + "\n")

    def plot(self, path: str | Path) -> Path:
        """Adaptation curve: mean test return (or oracle fraction) vs k, CI bands per start;
        the references and classical-selected as bands (the other classical rows: the table)."""
        use_oracle = self.oracle_returns is not None
        bands: dict[str, tuple[list[int], list[float], list[float], list[float]]] = {}
        refs: dict[str, tuple[float, float, float]] = {}
        for r in self.rows:
            ci = (
                r.oracle_fraction if use_oracle and r.oracle_fraction is not None else r.mean_return
            )
            if r.k is None:
                if r.method not in self.classical or r.method == SELECTED_LABEL:
                    refs[r.method] = (ci.estimate, ci.low, ci.high)
                continue
            ks, estimate, low, high = bands.setdefault(r.method, ([], [], [], []))
            ks.append(r.k)
            estimate.append(ci.estimate)
            low.append(ci.low)
            high.append(ci.high)
        curves = {method: CurveBand(*band) for method, band in bands.items()}
        ylabel = (
            "test return / oracle's return" if use_oracle else "mean test-window return (P&L / C0)"
        )
        title = f"Adaptation on {len(self.tasks)} held-out task(s)"
        return plot_adaptation_curve(path, curves, refs, ylabel=ylabel, title=title)

    def table(self) -> Any:
        """A rich Table of the rows (print it with ``rich.console.Console().print``)."""
        from rich.table import Table

        use_oracle = self.oracle_returns is not None
        conf = int(round(100 * self.config.get("confidence", 0.95)))
        title = f"Held-out evaluation on {', '.join(self.tasks)}"
        if self.period is not None:
            title += f"\n{self.period.describe()}"
        if self.seen:
            title = (
                f"WARNING: NOT HELD OUT: {', '.join(self.seen)} were meta-training tasks "
                f"(--allow-seen)\n{title}"
            )
        t = Table(title=title, caption=self._caption(), caption_justify="left")
        t.add_column("method")
        t.add_column("k", justify="right")
        split = "test" if self.period is None else self.period.split
        t.add_column(f"{split}-window return %", justify="right")
        t.add_column(f"{conf}% CI", justify="right")
        t.add_column("backtest return %", justify="right")
        if use_oracle:
            t.add_column("fraction of oracle", justify="right")
            t.add_column(f"{conf}% CI ", justify="right")
        for r in self.rows:
            cells = [
                r.method,
                "-" if r.k is None else str(r.k),
                f"{100 * r.mean_return.estimate:+.3f}",
                f"[{100 * r.mean_return.low:+.3f}, {100 * r.mean_return.high:+.3f}]",
                "-" if r.backtest_return is None else f"{100 * r.backtest_return:+.3f}",
            ]
            if use_oracle:
                f = r.oracle_fraction
                cells += (
                    ["-", "-"]
                    if f is None
                    else [f"{f.estimate:+.3f}", f"[{f.low:+.3f}, {f.high:+.3f}]"]
                )
            t.add_row(*cells)
        return t

    def _caption(self) -> str | None:
        """The paired differences against classical-selected, one line each (% of C0), then
        what limits how far the intervals can be trusted."""
        lines = [
            f"paired {k}: {100 * ci.estimate:+.3f} % [{100 * ci.low:+.3f}, {100 * ci.high:+.3f}]"
            for k, ci in self.headline().items()
        ]
        lines += [f"WARNING: {w}" for w in self.warnings]
        if self.bootstrap is not None and self.bootstrap.warning:
            lines.append(f"WARNING: {self.bootstrap.warning}")
        return "\n".join(lines) or None

    def format_table(self, width: int = 140) -> str:
        """The rich table rendered to plain text."""
        from rich.console import Console

        console = Console(width=width, record=True, file=io.StringIO())
        console.print(self.table())
        return console.export_text()

    def save(self, out_dir: str | Path, prefix: str = "evaluation") -> dict[str, str]:
        """Write ``<prefix>.csv``, ``.json``, ``.txt`` (the table) and ``_adaptation.png``."""
        out = Path(out_dir)
        return {
            "csv": str(self.to_csv(out / f"{prefix}.csv")),
            "json": str(self.to_json(out / f"{prefix}.json")),
            "table": str(atomic_write_text(out / f"{prefix}.txt", self.format_table())),
            "plot": str(self.plot(out / f"{prefix}_adaptation.png")),
        }


# Below this many effectively independent test windows a percentile interval is too narrow.
MIN_INDEPENDENT_WINDOWS = 30


def interval_warning(
    *, split_bars: list[int], window_bars: int, windows_per_task: int, split: str = "test"
) -> str | None:
    """Why the table's intervals may be too narrow, or None.

    The bootstrap resamples tasks, then test windows within a task; windows drawn from a
    short test split overlap, so they are far fewer independent observations than their
    count. Effectively independent windows: per task, at most split length / window length
    (non-overlapping windows that fit), summed over the tasks. Warn with one task (nothing
    to resample across tasks) or fewer than ``MIN_INDEPENDENT_WINDOWS``."""
    per_task = [min(windows_per_task, max(1.0, n / window_bars)) for n in split_bars]
    independent = sum(per_task)
    few_tasks = len(split_bars) == 1
    if not few_tasks and independent >= MIN_INDEPENDENT_WINDOWS:
        return None
    why = "one held-out task" if few_tasks else f"{len(split_bars)} held-out tasks"
    lo, hi = min(split_bars), max(split_bars)
    splits = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return (
        f"the intervals are likely too narrow: {why} and about {independent:.0f} effectively "
        f"independent {split} windows ({windows_per_task} windows of {window_bars} bars per "
        f"task in {split} splits of {splits} bars; {MIN_INDEPENDENT_WINDOWS}+ wanted): hold out more "
        "tasks, or use the walk-forward protocol (metatrade walkforward)"
    )


def task_mean(v: np.ndarray) -> float:
    return float(v.mean(axis=1).mean())
