"""The next decision, as deployment makes it (``metatrade signal``).

For the bar after the last one in the file: adapt the start on the latest W bars (ending
E bars before the last bar) exactly as a walk-forward fold whose first decision is the
last bar (``folds.live_fold``: same rows, same normalisation, same seed), then read the
policy's action probabilities on the last bar's observation. The account part of the
observation is an assumption the caller states: ``position`` (-1, 0, +1) with zero
unrealised P&L, equity at C0 and no bars held, which is exactly a flatten-mode fold's
first observation when ``position`` is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from metatrade.evaluation.protocol import Start
from metatrade.evaluation.walkforward.adapters import Adapter, adaptation_seed
from metatrade.evaluation.walkforward.folds import (
    FoldSpec,
    WalkForwardTask,
    fold_arrays,
    live_fold,
)
from metatrade.evaluation.walkforward.ledger import decide_one
from metatrade.market.config import ACCOUNT_DIM
from metatrade.market.rules import action_rules


@dataclass
class Signal:
    """One task's next decision."""

    task: str
    start: str
    last_bar: str  # time of the file's last bar, in the instrument's time zone
    decision_row: int
    action: int
    order: str  # the action's name: an order (actions "orders") or SHORT / FLAT / LONG
    probabilities: dict[str, float]
    position: int
    target: int  # the position after the order fills (-1, 0, +1)
    sampled: bool  # the action was drawn from the policy (else its mode)
    adapt_rows: tuple[int, int]
    norm_rows: tuple[int, int]
    steps: int

    def as_dict(self) -> dict:
        return dict(vars(self))


def observation(
    features: np.ndarray, row: int, lookback: int, position: int, account_dim: int = ACCOUNT_DIM
) -> np.ndarray:
    """``TradingEnv``'s observation at ``row``: the window of the last ``lookback`` feature
    rows, then the account: (position, unrealised P&L 0, equity return 0, bars held 0), or
    the position alone (``account_dim`` 1: ``TradingEnvConfig(observation="position")``)."""
    if row - lookback + 1 < 0:
        raise ValueError(f"row {row}: needs {lookback - 1} earlier rows for the window")
    window = np.asarray(features[row - lookback + 1 : row + 1], dtype=np.float32).ravel()
    account = np.zeros(account_dim, dtype=np.float32)
    account[0] = position
    return np.concatenate([window, account])


def next_decision(
    task: WalkForwardTask,
    label: str,
    start: Start,
    adapter: Adapter,
    spec: FoldSpec,
    *,
    lookback: int,
    seed: int,
    position: int = 0,
    account_dim: int = ACCOUNT_DIM,
    features: Sequence[str] | None = None,
    actions: str = "orders",
    sample: bool = False,
) -> Signal:
    """Adapt ``start`` on the latest window and decide for the bar after the last one
    (``last_bar`` in the instrument's time zone; ``features``, ``actions``: the run's
    ``env.features`` and ``env.actions``; ``sample``: draw the action from the policy,
    seeded by the job, instead of taking its mode, as ``evaluation.actions: sample`` trades
    it)."""
    if position not in (-1, 0, 1):
        raise ValueError(f"position={position}: use -1 (short), 0 (flat) or 1 (long)")
    rules = action_rules(actions)
    fold = live_fold(task.arrays, spec)
    arrays = fold_arrays(task, fold, spec).select_features(features)
    row = fold.trade[0]
    params = start.params
    job = adaptation_seed(seed, label, str(task.task), row)
    if adapter.steps:
        params = adapter(start, arrays, fold.adapt, seed=job)[-1]
    generator = torch.Generator().manual_seed(job) if sample else None
    obs = observation(arrays.features, row, lookback, position, account_dim)
    action, probs = decide_one(start.policy, params, obs, generator)
    tz = arrays.require_market().timezone
    when = pd.Timestamp(int(arrays.timestamps[row]), tz="UTC").tz_convert(tz)
    return Signal(
        task=str(task.task),
        start=label,
        last_bar=when.strftime("%Y-%m-%d %H:%M %Z"),
        decision_row=row,
        action=action,
        order=rules.labels[action],
        probabilities={rules.labels[i]: float(p) for i, p in enumerate(probs)},
        position=position,
        target=int(rules.next_position[action, position + 1]),
        sampled=sample,
        adapt_rows=fold.adapt,
        norm_rows=fold.norm,
        steps=adapter.steps,
    )
