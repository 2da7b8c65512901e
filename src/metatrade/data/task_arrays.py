"""The hand-off between the data layer and the market: one task's bars and features as arrays.

The market never reads files or computes indicators; it indexes these arrays. Keeping the
contract numpy-only keeps `data/` free of torch and `market/` free of pandas in the hot path.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from metatrade.data.instruments import Market


class TaskId(NamedTuple):
    """One meta-learning task: an (instrument, timeframe) pair, e.g. ("Bank_Nifty", "5")."""

    instrument: str
    timeframe: str

    def __str__(self) -> str:
        return f"{self.instrument}:{self.timeframe}"


@dataclass(frozen=True)
class TaskArrays:
    """Bars and causal features of one task, aligned row by row (warm-up rows already dropped).

    Shapes: every array is [N] except ``features`` [N, F].
    Causality: ``features[t]`` depends only on bars 0..t. An order decided on bar t fills at
    ``open[t + 1]``.
    """

    task: TaskId
    timestamps: np.ndarray  # int64 [N], nanoseconds since the epoch, UTC
    open: np.ndarray  # float64 [N]
    high: np.ndarray  # float64 [N]
    low: np.ndarray  # float64 [N]
    close: np.ndarray  # float64 [N]
    features: np.ndarray  # float32 [N, F], normalised with the train split's statistics
    feature_names: tuple[str, ...]
    session_end: np.ndarray  # bool [N], True on the last bar of each trading session
    bar_minutes: int
    # Half-open row ranges [start, stop) of the chronological splits in these arrays.
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)
    # int64 [N]: each bar's trading session, days since 1970-01-01 (the session's date)
    sessions: np.ndarray | None = None
    # the instrument and its clock (calendar, zone, currency, costs, bars per year); None for
    # hand-made arrays, which then get the library defaults and cannot be annualised
    market: Market | None = None

    def __len__(self) -> int:
        return len(self.close)

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    def require_market(self) -> Market:
        """``market``, or a ``ValueError`` saying how to build arrays that carry one."""
        if self.market is None:
            raise ValueError(
                f"task {self.task}: these arrays carry no market (TaskArrays.market), so their "
                "clock (bars and sessions per year) is unknown; build them with DataLoader or "
                "build_task_arrays(..., instrument=...)"
            )
        return self.market

    @property
    def bars_per_year(self) -> float:
        """Annualisation factor of this task's per-bar returns (its market's clock)."""
        return self.require_market().bars_per_year

    def session_labels(self) -> np.ndarray:
        """int64 [N] session of each bar (``sessions``; else numbered from ``session_end``)."""
        if self.sessions is not None:
            return self.sessions
        ends = np.asarray(self.session_end, dtype=bool)
        return np.concatenate([[0], np.cumsum(ends[:-1])]).astype(np.int64)

    def split_range(self, split: str) -> tuple[int, int]:
        """Row range of ``split`` ("train", "validation", "test" or "all")."""
        if split == "all":
            return 0, len(self)
        if split not in self.splits:
            raise KeyError(
                f"task {self.task}: no split {split!r}; available: {sorted(self.splits)} or 'all'"
            )
        return self.splits[split]

    def select_features(self, names: Sequence[str] | None) -> TaskArrays:
        """These arrays with the feature columns ``names``, in that order (None, or the names
        they already hold: these arrays themselves, no copy). ``env.features`` reaches every
        env, window and signal through this one function."""
        if names is None or tuple(names) == self.feature_names:
            return self
        missing = [n for n in names if n not in self.feature_names]
        if missing:
            close = difflib.get_close_matches(missing[0], self.feature_names, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(
                f"task {self.task}: no feature {missing[0]!r} in its arrays; {hint}they hold "
                f"{', '.join(self.feature_names)} (a DataLoader computes the names given to its "
                "features argument, the standard set by default)"
            )
        cols = [self.feature_names.index(n) for n in names]
        return replace(
            self, features=np.ascontiguousarray(self.features[:, cols]), feature_names=tuple(names)
        )
