"""Walk-forward folds of one task and the features each fold may see.

A fold is three row ranges of the task's arrays (rows are bars after the feature warm-up):

* ``trade = [a, b)``: the decision rows. The policy decides at the close of every bar
  t in [a, b) (the order fills at ``open[t + 1]``); the fold's P&L runs to ``close[b]``.
* ``adapt = [a - E - W, a - E)``: the W bars the adapter may use, ending an embargo of E
  bars before the fold. Adaptation episodes observe, act and are rewarded on these rows
  only (their observation windows may reach L - 1 rows further back: the past).
* ``norm``: the rows whose statistics z-score the features the fold sees (below).

Normalisation (``normalisation``):

* ``"expanding"`` (default): each fold re-normalises the task's raw causal features with
  the mean and std of rows ``[max(0, a - E - norm_bars), a - E)``, i.e. of history that
  ends where the adaptation window ends (``norm_bars`` None: all of it). What a live
  account would do when it re-adapts, and independent of how far the file extends: a
  file cut after row ``a`` gives the fold the same features (``metatrade signal``).
* ``"train-split"``: the loader's features, z-scored once with the task's train split
  (as in meta-training). Causal only when the train split ends before the first
  adaptation window ends; checked. A file cut elsewhere moves a fraction-based train
  split, so ``signal`` matches the walk-forward only with a date-based split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from metatrade.data.calendar import assign_sessions
from metatrade.data.features import (
    FEATURE_NAMES,
    all_raw_features,
    available_features,
    build_task_arrays,
    normalise,
    warmup_rows,
)
from metatrade.data.instruments import Instrument
from metatrade.data.splits import SplitConfig
from metatrade.data.task_arrays import TaskArrays, TaskId
from metatrade.errors import ConfigError

if TYPE_CHECKING:
    from metatrade.data.loader import DataLoader

NORMALISATIONS = ("expanding", "train-split")
SPLIT_STARTS = ("train", "validation", "test")


@dataclass(frozen=True)
class WalkForwardTask:
    """A task's arrays plus its raw (unnormalised) causal features [N, F], row-aligned."""

    arrays: TaskArrays
    raw: np.ndarray

    @property
    def task(self) -> TaskId:
        return self.arrays.task

    def __len__(self) -> int:
        return len(self.arrays)


def prepare_task(
    task: TaskId,
    bars: pd.DataFrame,
    *,
    instrument: Instrument,
    splits: SplitConfig | None = None,
    features: Sequence[str] | None = None,
) -> WalkForwardTask:
    """Bars of one task -> arrays (``build_task_arrays``) and the raw features behind them,
    both with the columns ``features`` (default ``FEATURE_NAMES``)."""
    names = tuple(FEATURE_NAMES if features is None else features)
    arrays = build_task_arrays(
        task, bars, splits=splits or SplitConfig(), instrument=instrument, features=names
    )
    ts = np.asarray(bars.index.as_unit("ns").asi8, dtype=np.int64)
    o, h, lo, c = (bars[k].to_numpy(np.float64) for k in ("open", "high", "low", "close"))
    sessions = assign_sessions(ts, instrument.calendar, instrument.timezone)
    raw = all_raw_features(o, h, lo, c, ts, bar_minutes=arrays.bar_minutes, sessions=sessions)
    raw = raw[warmup_rows(raw) :][:, [available_features().index(n) for n in names]]
    if raw.shape[0] != len(arrays):
        raise ValueError(
            f"task {task}: raw features ({raw.shape[0]} rows) != arrays ({len(arrays)})"
        )
    return WalkForwardTask(arrays, raw)


def cut_after(task: WalkForwardTask, split: str) -> WalkForwardTask:
    """The task as if its file ended at the last bar of ``split``: a walk-forward over the
    result never reads a later bar (tuning walks over validation without the test split
    in memory). Later splits become empty ranges at the end."""
    stop = task.arrays.split_range(split)[1]
    a = task.arrays
    cut = {k: (min(lo, stop), min(hi, stop)) for k, (lo, hi) in a.splits.items()}
    rows = slice(0, stop)
    arrays = replace(
        a,
        timestamps=a.timestamps[rows],
        open=a.open[rows],
        high=a.high[rows],
        low=a.low[rows],
        close=a.close[rows],
        features=a.features[rows],
        session_end=a.session_end[rows],
        splits=cut,
        sessions=None if a.sessions is None else a.sessions[rows],
    )
    return WalkForwardTask(arrays, task.raw[rows])


def load_tasks(loader: DataLoader, tasks: Sequence[TaskId]) -> list[WalkForwardTask]:
    """``prepare_task`` for each task of a ``DataLoader`` (its split config, instruments and
    feature columns)."""
    out = []
    for t in tasks:
        task = TaskId(*t)
        bars = loader.get_task_data(*task)
        out.append(
            prepare_task(
                task,
                bars,
                instrument=loader.instrument(task.instrument),
                splits=loader.splits,
                features=getattr(loader, "features", None),
            )
        )
    return out


@dataclass(frozen=True)
class Fold:
    """Row ranges of one fold (module docstring); ``index`` -1 marks a live (signal) fold."""

    index: int
    adapt: tuple[int, int]
    norm: tuple[int, int]
    trade: tuple[int, int]

    @property
    def decision_rows(self) -> range:
        return range(*self.trade)


@dataclass(frozen=True)
class FoldSpec:
    """Fold geometry in bars (or in sessions of the task's calendar when ``unit == "days"``,
    converted per task: ``Market.sessions_to_bars``)."""

    fold_bars: int = 125
    adapt_bars: int = 250
    embargo: int = 0
    unit: str = "bars"
    norm_bars: int | None = None
    normalisation: str = "expanding"

    def __post_init__(self) -> None:
        # ConfigError (a ValueError): the geometry is what the user chose (--fold-bars, ...)
        if self.unit not in ("bars", "days"):
            raise ConfigError(f"fold unit={self.unit!r}: use 'bars' or 'days'")
        if self.fold_bars < 1 or self.adapt_bars < 1 or self.embargo < 0:
            raise ConfigError(
                f"fold_bars={self.fold_bars} (>= 1), adapt_bars={self.adapt_bars} (>= 1), "
                f"embargo={self.embargo} (>= 0): fix the walk-forward geometry"
            )
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(
                f"--normalisation {self.normalisation!r}: use {' or '.join(NORMALISATIONS)}"
            )
        if self.norm_bars is not None and self.norm_bars < 2:
            raise ConfigError(f"norm_bars={self.norm_bars}: use >= 2 bars or None (all history)")

    def in_bars(self, arrays: TaskArrays) -> tuple[int, int, int]:
        """(F, W, E) in bars of the task ``arrays`` (sessions of its market when in days)."""
        if self.unit == "bars":
            return self.fold_bars, self.adapt_bars, self.embargo
        if arrays.market is None:
            raise ValueError(
                f"task {arrays.task}: folds in sessions need the task's market "
                "(TaskArrays.market); give them in bars or build the arrays with DataLoader"
            )
        to_bars = arrays.market.sessions_to_bars
        return (
            to_bars(self.fold_bars),
            to_bars(self.adapt_bars),
            to_bars(self.embargo) if self.embargo else 0,
        )


def _fold(
    index: int, a: int, b: int, spec: FoldSpec, w: int, e: int, train: tuple[int, int]
) -> Fold:
    hi = a - e
    if spec.normalisation == "train-split":
        norm = train
    else:
        norm = (0 if spec.norm_bars is None else max(0, hi - spec.norm_bars), hi)
    return Fold(index, (hi - w, hi), norm, (a, b))


def parse_start(start: str | int) -> str | int:
    """A walk-forward start as typed (``--from``): a split name, a row number or a date;
    ``ConfigError`` for anything else (e.g. a start policy's name)."""
    if isinstance(start, int | np.integer):
        return int(start)
    text = str(start).strip()
    if text in SPLIT_STARTS:
        return text
    if text.isdigit():
        return int(text)
    try:
        pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(
            f"--from {text!r}: the first fold starts at a split ({', '.join(SPLIT_STARTS)}), "
            "a row number or a date such as 2024-03-01"
        ) from None
    return text


def resolve_start(arrays: TaskArrays, start: str | int) -> int:
    """First decision row: a split name ("validation", "test"), a row, or a date (naive:
    in the instrument's time zone)."""
    start = parse_start(start)
    if isinstance(start, int):
        return start
    if start in SPLIT_STARTS:
        return arrays.split_range(start)[0]
    ts = pd.Timestamp(start)
    tz = arrays.market.timezone if arrays.market is not None else "UTC"
    ts = ts.tz_localize(tz) if ts.tzinfo is None else ts
    return int(np.searchsorted(arrays.timestamps, ts.tz_convert("UTC").value, side="left"))


def _day(arrays: TaskArrays, row: int) -> str:
    tz = arrays.market.timezone if arrays.market is not None else "UTC"
    return str(pd.Timestamp(int(arrays.timestamps[row]), tz="UTC").tz_convert(tz).date())


def _check_start(arrays: TaskArrays, a: int, start: str | int, need: int, parts: str) -> None:
    """``ConfigError`` unless the first fold's row ``a`` has ``need`` rows before it (the
    lookback, the adaptation window and the embargo: ``parts``) and one bar after it."""
    n = len(arrays)
    if need > n - 2:
        raise ConfigError(
            f"task {arrays.task}: {n} rows, but the first fold needs {parts} = {need} rows "
            "before it and one after; use a smaller --adapt-bars/--adapt-days or --embargo"
        )
    if a < need or a > n - 2:
        raise ConfigError(
            f"task {arrays.task}: --from {start!r} is row {a}, but the first fold must start "
            f"between row {need} ({_day(arrays, need)}: {parts} rows before it) and row "
            f"{n - 2} ({_day(arrays, n - 2)}: one bar after it); choose a start in that range"
        )


def make_folds(
    arrays: TaskArrays, spec: FoldSpec, start: str | int, *, lookback: int, min_adapt: int = 2
) -> list[Fold]:
    """Consecutive, non-overlapping folds from ``start`` to the task's last bar."""
    f, w, e = spec.in_bars(arrays)
    n = len(arrays)
    a = resolve_start(arrays, start)
    need = lookback - 1 + w + e
    parts = f"lookback {lookback} - 1 + adapt window {w} + embargo {e}"
    _check_start(arrays, a, start, need, parts)
    if w < min_adapt:
        raise ConfigError(f"task {arrays.task}: adapt window {w} bars < {min_adapt} needed")
    train = arrays.split_range("train")
    if spec.normalisation == "train-split" and train[1] > a - e:
        raise ConfigError(
            f"task {arrays.task}: train split ends at row {train[1]}, after the first "
            f"adaptation window ends ({a - e}); train-split normalisation would see the "
            "future: start later (--from) or use --normalisation expanding"
        )
    folds: list[Fold] = []
    while a <= n - 2:
        b = min(a + f, n - 1)
        folds.append(_fold(len(folds), a, b, spec, w, e, train))
        a = b
    return folds


def live_fold(arrays: TaskArrays, spec: FoldSpec) -> Fold:
    """The fold whose first decision is at the file's last bar (what ``signal`` trades):
    identical to walk-forward fold f when the file ends at that fold's first decision row."""
    _, w, e = spec.in_bars(arrays)
    n = len(arrays)
    if n - 1 - e - w < 0:
        raise ConfigError(
            f"task {arrays.task}: {n} rows after warm-up; signal needs adapt bars {w} + "
            f"embargo {e} + 1; use a smaller --adapt-bars or a longer file"
        )
    return _fold(-1, n - 1, n, spec, w, e, arrays.split_range("train"))


def fold_arrays(task: WalkForwardTask, fold: Fold, spec: FoldSpec) -> TaskArrays:
    """The task's arrays as fold ``fold`` sees them: features normalised per ``spec`` and
    splits ``adapt`` (the adaptation rows) and ``trade`` (decision rows plus the last mark)."""
    a = task.arrays
    feats = a.features if spec.normalisation == "train-split" else normalise(task.raw, fold.norm)[0]
    stop = min(fold.trade[1] + 1, len(a))
    return replace(
        a, features=feats, splits={**a.splits, "adapt": fold.adapt, "trade": (fold.trade[0], stop)}
    )
