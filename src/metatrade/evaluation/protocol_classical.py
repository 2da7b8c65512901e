"""The classical rows of the meta-test protocol (``metatrade.evaluation.baselines``): each
rule fitted on the rows every start adapts on, then traded on the protocol's test windows and
whole-split backtest like the reference rows (paired with every other row)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.baselines import FittedRule, Rows, fit_tasks
from metatrade.evaluation.protocol_rollouts import rollout_returns, rule_actor
from metatrade.exact.windows import latest_windows
from metatrade.market.config import TradingEnvConfig, episode_bounds

if TYPE_CHECKING:
    from metatrade.evaluation.protocol_config import ProtocolConfig


def adaptation_rows(
    arrays: Sequence[TaskArrays],
    config: TradingEnvConfig,
    *,
    exact: bool,
    num_windows: int,
    vol_bars: int,
) -> list[Rows]:
    """Per task, the rows [lo, hi) the inner loop adapts on in ``config.split`` (every row an
    adaptation episode decides, fills or is marked on):

    * exact estimator: the ``num_windows`` back-to-back windows of ``latest_windows`` (the
      same call the adaptation makes), from the first one's first decision to the last one's
      final mark;
    * sampled estimator: every row an episode of ``config`` can trade, from the first
      possible start to the split's last row.
    """
    if exact:
        starts = latest_windows(
            list(arrays), num_windows=num_windows, config=config, vol_bars=vol_bars
        ).start.numpy()
        n = int(config.episode_length or 0)
        return [(int(s[0]), int(s[-1]) + n + 1) for s in starts]
    return [(first, stop) for first, _, stop in (episode_bounds(a, config) for a in arrays)]


def classical_rows(
    config: ProtocolConfig, arrays: Sequence[TaskArrays], plan: Any
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[FittedRule]]]:
    """Fit ``config.classical`` on each task's adaptation rows and trade them on the plan's
    test windows (returns [T, E]) and, with ``config.backtest``, its whole-split backtest
    (returns [T]); also the fitted rules {label: [per task]}. Nothing without rows asked."""
    if not config.classical:
        return {}, {}, {}
    rows = adaptation_rows(
        arrays,
        plan.train_cfg,
        exact=config.adaptation.exact_objective,
        num_windows=config.adaptation_episodes,
        vol_bars=config.objective.vol_bars,
    )
    fits = fit_tasks(
        config.classical, arrays, rows, env=config.env, config=config.classical_settings
    )
    returns, backtests = {}, {}
    for lab, rules in fits.items():
        act = rule_actor([r.positions(a) for r, a in zip(rules, arrays, strict=True)])
        returns[lab] = rollout_returns(plan.test_env, act, plan.windows)
        if plan.bt_env is not None:
            backtests[lab] = rollout_returns(plan.bt_env, act, None)[:, 0]
    return returns, backtests, fits
