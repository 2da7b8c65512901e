"""The hand-off between the data layer and the market: one task's bars and features as arrays.

The market never reads files or computes indicators; it indexes these arrays. Keeping the
contract numpy-only keeps `data/` free of torch and `market/` free of pandas in the hot path.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np


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

    def __len__(self) -> int:
        return len(self.close)

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

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
