"""The classical rows of the walk-forward (``metatrade.evaluation.baselines``): before every
fold each rule is re-fitted on the rows the fold's adapter adapts on, exactly when the starts
are re-adapted, and trades the fold's decision rows as a target-position row of the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metatrade.evaluation.baselines import ClassicalConfig, Rows, describe, fit_classical
from metatrade.evaluation.protocol_classical import adaptation_rows
from metatrade.evaluation.walkforward.adapters import Adapter, InnerLoopAdapter, _adaptation_rows
from metatrade.evaluation.walkforward.folds import Fold, WalkForwardTask
from metatrade.market.config import TradingEnvConfig


def adapter_rows(adapter: Adapter, task: WalkForwardTask, rows: Rows) -> Rows:
    """The rows [lo, hi) of a fold's adaptation window ``rows`` that ``adapter`` trades or is
    rewarded on: the exact estimator's latest windows, every row a sampled episode may trade,
    or the whole window for any other adapter."""
    if not isinstance(adapter, InnerLoopAdapter):
        return rows
    env, length = adapter.env, adapter.env.episode_length
    if length is None:
        return rows
    ta, cfg = _adaptation_rows(task.arrays, rows, env, length)
    return adaptation_rows(
        [ta],
        cfg,
        exact=adapter.adaptation.exact_objective,
        num_windows=adapter.adaptation.episodes_per_task,
        vol_bars=adapter.objective.vol_bars,
    )[0]


def classical_targets(
    task: WalkForwardTask,
    folds: Sequence[Fold],
    adapter: Adapter,
    names: Sequence[str],
    *,
    env: TradingEnvConfig,
    settings: ClassicalConfig,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Per classical row label, target positions [N] whose decision rows of fold f come from
    the rule fitted before fold f; and per fold the fits (``baselines.describe``)."""
    n = len(task)
    targets: dict[str, np.ndarray] = {}
    record: list[dict[str, Any]] = []
    if not names:
        return targets, record
    for fold in folds:
        rows = adapter_rows(adapter, task, fold.adapt)
        fits = fit_classical(names, task.arrays, rows, env=env, config=settings)
        a, b = fold.trade
        for label, rule in fits.items():
            tg = targets.setdefault(label, np.zeros(n, dtype=np.int8))
            tg[a:b] = rule.positions(task.arrays)[a:b]
        record.append(describe(fits))
    return targets, record
