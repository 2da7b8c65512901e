"""All bars of a batch of tasks concatenated once, with the no-copy view of observation
windows that ``BatchTradingEnv`` gathers from (one memcpy per observation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metatrade.data.task_arrays import TaskArrays
from metatrade.market.config import validate_arrays


def feature_width(task_arrays_list: Sequence[TaskArrays], episodes_per_task: int) -> int:
    """The tasks' shared feature width F, after checking the constructor's inputs (the
    arrays' features already selected by the config)."""
    if not task_arrays_list:
        raise ValueError("BatchTradingEnv needs at least one TaskArrays")
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task={episodes_per_task}: use >= 1")
    widths = {ta.num_features for ta in task_arrays_list}
    if len(widths) != 1:
        detail = {str(ta.task): ta.num_features for ta in task_arrays_list}
        raise ValueError(f"all tasks need the same feature width F; got {detail}")
    for ta in task_arrays_list:
        validate_arrays(ta)
    return widths.pop()


@dataclass(frozen=True)
class ConcatenatedBars:
    """Every task's rows end to end; ``offsets[i]`` is task i's row 0 as a global row."""

    offsets: np.ndarray
    open: np.ndarray  # float64 [rows]
    close: np.ndarray  # float64 [rows]
    session_end: np.ndarray  # bool [rows]
    windows: np.ndarray  # void items [rows - L + 1]: one observation row each (see below)
    flat: np.ndarray  # float32 buffer behind ``windows`` (keep it alive)


def concatenate_bars(
    task_arrays: Sequence[TaskArrays], *, lookback: int, account_dim: int
) -> ConcatenatedBars:
    """Concatenate the tasks' bars and build the overlapping observation-window view (tasks
    share the feature width F)."""
    n_feat = task_arrays[0].num_features
    window_size = lookback * n_feat
    n_acc = account_dim
    lengths = np.array([len(ta) for ta in task_arrays])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    open_ = np.concatenate([ta.open for ta in task_arrays]).astype(np.float64)
    close = np.concatenate([ta.close for ta in task_arrays]).astype(np.float64)
    session_end = np.concatenate([ta.session_end for ta in task_arrays]).astype(bool)
    flat = np.concatenate(
        [np.ascontiguousarray(ta.features, dtype=np.float32).ravel() for ta in task_arrays]
    )
    # Item g of this view is the raw bytes of features[g : g + L] (flattened) followed by
    # A more floats (the next row's start, or padding): exactly one observation row,
    # whose last A floats ``_observe`` overwrites with the account. Items overlap (no
    # copy); a gather is one memcpy per observation straight into the returned array.
    n_rows = len(flat) // n_feat
    flat = np.concatenate([flat, np.zeros(n_acc, dtype=np.float32)])
    windows = np.ndarray(
        (n_rows - lookback + 1,),
        dtype=np.dtype((np.void, 4 * (window_size + n_acc))),
        buffer=flat,
        strides=(4 * n_feat,),
    )
    return ConcatenatedBars(offsets, open_, close, session_end, windows, flat)
