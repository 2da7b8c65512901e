"""The meta-test protocol: does adapting from the meta-parameters beat the alternatives on
tasks never seen in meta-training?

For every held-out task and every starting point (the MAML meta-parameters, a multi-task PPO
policy, a random initialisation), the same inner loop (``metatrade.meta.adapt.adapt``, the
run's estimator, step size and episodes) takes k = 0, 1, 2, 3 steps on the task's *adaptation
window* (its train split; each step samples fresh episodes with the current adapted policy,
as in the MAML paper, or reads the exact objective's latest windows). Every adapted policy is
then evaluated out of sample, on the task's *test* split:

* ``test_episodes`` random test windows per task (the same windows for every start and k,
  so comparisons are paired), each an episode whose return is its P&L over C0;
* one whole-split backtest from the split's first bar.

Both trade the policy as ``deterministic_test`` says (the run config's ``evaluation.actions``):
its sampled actions (each row from its own seeded streams) or its mode.

Both end the same way as ``metatrade.evaluation.backtest.run_backtest``: a position still
open after the last bar is closed at that bar's close, paying the exit cost, so a return
counts every cost and a row's backtest equals the report's "Total Return".

Every start draws from streams of its own (action noise, adaptation resets, test-window
actions), seeded from ``seed`` and the start's label: a row does not change when another
row (e.g. PPO) is added or dropped.

Buy-and-hold and flat are reference rows, run on the same windows. The classical adaptive
rows (``ProtocolConfig.classical``: plug-in AR(p), momentum, reversal, time of day and
classical-selected, ``metatrade.evaluation.baselines``) are fitted on each task's rows that
the starts adapt on (``protocol_classical.adaptation_rows``: the exact estimator's latest
windows, or every row a sampled episode may trade) and traded on the same windows and
backtest; the paired difference "MAML k=1 minus classical-selected" is the table's headline.
On the synthetic families (``oracle``: each task's true rule,
``metatrade.data.synthetic.OracleRule``) every return is also reported as a fraction of the
oracle's return on the same windows (a paired ratio of means, pooled over tasks;
``metatrade.evaluation.kinds`` breaks it down by kind). 95% CIs come from the day bootstrap
(``bootstrap.day_bootstrap_means``): whole trading days resampled in blocks, jointly for
every task (a window belongs to the day of its first bar; the timeframes of an instrument
and the instruments of a day move together), blocks at least as long as a window spans,
then the tasks drawn with replacement (each keeping the day draw), with the same resamples
for every row.

Code: inputs in ``protocol_config`` (``Start``, ``ProtocolConfig``), rollouts in
``protocol_rollouts``, the result and its outputs in ``protocol_result``; every public name
imports from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from metatrade import progress
from metatrade.agents.networks.base import Policy
from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.backtest import PositionRule
from metatrade.evaluation.bootstrap import (
    day_bootstrap_means,
    percentile_interval,
    session_dates,
)
from metatrade.evaluation.protocol_adapt import adapt_start, adaptation_env
from metatrade.evaluation.protocol_classical import classical_rows
from metatrade.evaluation.protocol_config import (
    REF_LABEL,
    REFERENCES,
    Params,
    ProtocolConfig,
    Start,
    module_params,
    random_start,
)
from metatrade.evaluation.protocol_result import (
    EvaluationResult,
    EvaluationRow,
    interval_warning,
    task_mean,
)
from metatrade.evaluation.protocol_rollouts import (
    architecture_groups,
    backtest_seed,
    feasible_length,
    policy_actions,
    rollout_returns,
    rule_actor,
)
from metatrade.io import json_safe
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig, episode_bounds
from metatrade.seeding import derive_seed

__all__ = [
    "EvaluationResult",
    "EvaluationRow",
    "MetaTestProtocol",
    "Params",
    "ProtocolConfig",
    "Start",
    "module_params",
    "random_start",
]


@dataclass
class _Plan:
    """What every row of one protocol run shares: env configs, test windows, envs."""

    train_cfg: TradingEnvConfig
    test_cfg: TradingEnvConfig
    bt_cfg: TradingEnvConfig
    windows: np.ndarray  # [T, test_episodes] start bars of the test windows
    test_env: BatchTradingEnv
    bt_env: BatchTradingEnv | None


def _window_days(arrays: list[TaskArrays], plan: _Plan) -> tuple[np.ndarray, float]:
    """The trading day of each test window's first bar [T, E] and the median number of
    days a window spans (the shortest block that keeps overlapping windows together)."""
    length = plan.test_cfg.episode_length or 1
    days, spans = [], []
    for a, starts in zip(arrays, plan.windows, strict=True):
        dates = session_dates(a)
        days.append(dates[starts])
        spans += [len(np.unique(dates[s : s + length])) for s in starts]
    return np.stack(days), float(np.median(spans))


class MetaTestProtocol:
    """Adapt each start on every held-out task and evaluate out of sample (module docstring).

    Example::

        protocol = MetaTestProtocol(ProtocolConfig(adaptation_steps=(0, 1, 2, 3)))
        result = protocol.run({"MAML": maml_start, "PPO": ppo_start,
                               "random": random_start(policy, seed=0)}, held_out, loader)
        print(result.format_table()); result.save("runs/x/eval")
    """

    def __init__(self, config: ProtocolConfig | None = None) -> None:
        self.config = config or ProtocolConfig()

    # -- inputs
    def _arrays(self, tasks: Sequence[Any], loader: Any) -> list[TaskArrays]:
        out = []
        for t in tasks:
            if isinstance(t, TaskArrays):
                out.append(t)
            else:
                if loader is None:
                    raise ValueError(f"task {t}: pass TaskArrays or a DataLoader to read it from")
                out.append(loader.get_task_arrays(*t))
        if not out:
            raise ValueError("MetaTestProtocol.run: no tasks; pass the held-out tasks")
        return out

    def run(
        self,
        starts: Mapping[str, Start | tuple[Policy, Params]],
        tasks: Sequence[Any],
        loader: Any = None,
    ) -> EvaluationResult:
        """Run the protocol.

        Args:
            starts: label -> Start (or (policy, params)), e.g. {"MAML": ..., "PPO": ...,
                "random": random_start(policy, seed)}.
            tasks: held-out TaskIds (read through ``loader``) or TaskArrays.
            loader: a DataLoader (``get_task_arrays``), unless tasks are TaskArrays.
        """
        cfg = self.config
        arrays = self._arrays(tasks, loader)
        given = {k: (v if isinstance(v, Start) else Start(*v)) for k, v in starts.items()}
        if not given:
            raise ValueError("MetaTestProtocol.run: no starts; pass e.g. {'MAML': Start(...)}")
        plan = self._plan(arrays)
        adapted: dict[tuple[str, int], Params] = {}
        with progress.stage(f"meta-test: adapting {len(given)} starts", len(given)) as step:
            for label, start in given.items():
                snapshots = adapt_start(cfg, label, start, arrays, plan.train_cfg)
                for k in cfg.adaptation_steps:
                    adapted[(label, k)] = snapshots[k]
                step(label)
        returns: dict[str, np.ndarray] = {}
        backtests: dict[str, np.ndarray] = {}
        # Evaluate every adapted policy; rows sharing an architecture go in one batched env.
        groups = list(architecture_groups(given, adapted).values())
        with progress.stage("meta-test: testing", len(groups) + 2) as step:
            for rows in groups:
                self._evaluate_group(rows, arrays, plan, returns, backtests)
                step(", ".join(r[0] for r in rows))
            classical, classical_bt, fits = classical_rows(cfg, arrays, plan)
            returns.update(classical)
            backtests.update(classical_bt)
            step("classical rules")
            oracle_returns, oracle_bt = self._evaluate_rules(arrays, plan, returns, backtests)
            step("references")
        result = self._summarise(
            arrays, returns, backtests, oracle_returns, oracle_bt, adapted, plan
        )
        result.windows, result.classical = plan.windows, fits
        split_bars = [a.split_range(cfg.test_split) for a in arrays]
        note = interval_warning(
            split_bars=[stop - first for first, stop in split_bars],
            window_bars=plan.test_cfg.episode_length or 1,
            windows_per_task=cfg.test_episodes,
            split=cfg.test_split,
        )
        result.warnings = [note] if note else []
        return result

    def _plan(self, arrays: list[TaskArrays]) -> _Plan:
        """Episode lengths that fit every task, the env configs, and the explicit test windows
        that every row (start, k, reference) trades."""
        cfg = self.config
        num_eps = cfg.test_episodes
        test_len = min(
            cfg.test_episode_length,
            max(1, feasible_length(arrays, cfg.env, cfg.test_split) // 2),
        )
        train_cfg = adaptation_env(cfg, arrays)
        # Every row's ledger pays the exit of a position still open at the end.
        ledger = {"split": cfg.test_split, "liquidate_at_end": True}
        test_cfg = cfg.env.with_overrides(episode_length=test_len, **ledger)
        bt_cfg = cfg.env.with_overrides(episode_length=None, **ledger)
        # Explicit test windows: every row (start, k, reference) trades exactly these.
        win_rng = np.random.default_rng(derive_seed(cfg.seed, "protocol", "test windows"))
        bounds = [episode_bounds(a, test_cfg) for a in arrays]
        windows = np.stack([win_rng.integers(f, last + 1, size=num_eps) for f, last, _ in bounds])
        test_env = BatchTradingEnv(arrays, num_eps, test_cfg)
        bt_env = BatchTradingEnv(arrays, 1, bt_cfg) if cfg.backtest else None
        return _Plan(train_cfg, test_cfg, bt_cfg, windows, test_env, bt_env)

    def adapt(
        self, label: str, start: Start, arrays: list[TaskArrays]
    ) -> tuple[dict[int, Params], list[float]]:
        """``start`` (labelled ``label``: its streams) adapted on every task as ``run`` adapts
        it: its parameters [T, ...] after each k in ``adaptation_steps`` and the mean return
        (minus the exact loss) after k = 0..max(k) steps on the adaptation data. ``metatrade
        adapt`` and ``backtest -k`` call it, so they adapt exactly as ``evaluate`` does."""
        curve: list[float] = []
        env = adaptation_env(self.config, arrays)
        snapshots = adapt_start(self.config, label, start, arrays, env, curve=curve)
        return snapshots, curve

    def _evaluate_group(
        self,
        rows: list[tuple[str, nn.Module, Params]],
        arrays: list[TaskArrays],
        plan: _Plan,
        returns: dict[str, np.ndarray],
        backtests: dict[str, np.ndarray],
    ) -> None:
        """Test-window returns (and backtests) of rows of one architecture, stacked into one
        env of ``len(rows) * T`` tasks; each row samples from its own stream."""
        cfg = self.config
        num_tasks, num_eps = len(arrays), cfg.test_episodes
        policy = rows[0][1]
        stacked = {n: torch.cat([r[2][n] for r in rows]) for n in rows[0][2]}
        reps = len(rows)
        env = BatchTradingEnv(arrays * reps, num_eps, plan.test_cfg)
        gens = [torch.Generator().manual_seed(derive_seed(cfg.seed, "test", r[0])) for r in rows]
        out = rollout_returns(
            env,
            lambda o, e, p, g=gens, pi=policy, th=stacked: policy_actions(
                pi, th, o, cfg.deterministic_test, g
            ),
            np.tile(plan.windows, (reps, 1)),
        )
        for i, (row, _, _) in enumerate(rows):
            returns[row] = out[i * num_tasks : (i + 1) * num_tasks]
        if cfg.backtest:
            env = BatchTradingEnv(arrays * reps, 1, plan.bt_cfg)
            # one stream per (row, task), so `metatrade backtest` of one task draws the same
            bt = [
                torch.Generator().manual_seed(backtest_seed(cfg.seed, r[0], str(a.task)))
                for r in rows
                for a in arrays
            ]
            out = rollout_returns(
                env,
                lambda o, e, p, g=bt, pi=policy, th=stacked: policy_actions(
                    pi, th, o, cfg.deterministic_test, g
                ),
                None,
            )[:, 0]
            for i, (row, _, _) in enumerate(rows):
                backtests[row] = out[i * num_tasks : (i + 1) * num_tasks]

    def _evaluate_rules(
        self,
        arrays: list[TaskArrays],
        plan: _Plan,
        returns: dict[str, np.ndarray],
        backtests: dict[str, np.ndarray],
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The reference rows (into ``returns`` / ``backtests``) and the oracle's test-window
        returns and backtests (None without ``oracle``), on the same windows."""
        cfg = self.config
        ref_rules: dict[str, PositionRule] = {
            REF_LABEL[name]: REFERENCES[name]() for name in cfg.references
        }
        oracle_returns = oracle_bt = None
        if cfg.oracle is not None:
            missing = [str(a.task) for a in arrays if a.task not in cfg.oracle]
            if missing:
                raise KeyError(f"ProtocolConfig.oracle has no regime for tasks {missing}")
        for name, rule in ref_rules.items():
            act = rule_actor([rule.positions(a) for a in arrays])
            returns[name] = rollout_returns(plan.test_env, act, plan.windows)
            if plan.bt_env is not None:
                backtests[name] = rollout_returns(plan.bt_env, act, None)[:, 0]
        if cfg.oracle is not None:
            # each task's true rule supplies its oracle (OracleRule: AR(1), or any regime kind)
            act = rule_actor(
                [cfg.oracle[a.task].positions(a, threshold=cfg.oracle_threshold) for a in arrays]
            )
            oracle_returns = rollout_returns(plan.test_env, act, plan.windows)
            if plan.bt_env is not None:
                oracle_bt = rollout_returns(plan.bt_env, act, None)[:, 0]
            if task_mean(oracle_returns) <= 0:
                raise ValueError(
                    f"the oracle loses money on average over the test windows of {len(arrays)} "
                    "tasks; its return cannot normalise; raise oracle_threshold to cover costs"
                )
        return oracle_returns, oracle_bt

    def _summarise(
        self,
        arrays: list[TaskArrays],
        returns: dict[str, np.ndarray],
        backtests: dict[str, np.ndarray],
        oracle_returns: np.ndarray | None,
        oracle_bt: np.ndarray | None,
        adapted: dict[tuple[str, int], Params],
        plan: _Plan,
    ) -> EvaluationResult:
        cfg = self.config
        labels = list(returns)
        stacked = np.stack([returns[k] for k in labels])  # [M, T, E]
        if oracle_returns is not None:  # the oracle shares the resample indices (paired)
            stacked = np.concatenate([stacked, oracle_returns[None]])
        rng = np.random.default_rng(derive_seed(cfg.seed, "protocol", "bootstrap"))
        days, span = _window_days(arrays, plan)
        reps, blocks = day_bootstrap_means(
            stacked, days, min_block=span, num_resamples=cfg.bootstrap_samples, rng=rng
        )
        replicates = {f"return:{k}": reps[i] for i, k in enumerate(labels)}
        oracle_mean = None
        if oracle_returns is not None:
            # Ratio of means (pooled over tasks): robust to tasks whose oracle earns ~0.
            oracle_mean = task_mean(oracle_returns)
            with np.errstate(divide="ignore", invalid="ignore"):
                replicates.update(
                    {f"fraction:{k}": reps[i] / reps[-1] for i, k in enumerate(labels)}
                )
        rows = []
        for i, label in enumerate(labels):
            method, _, kk = label.partition("@k")
            k = int(kk) if kk else None
            ci = percentile_interval(reps[i], task_mean(stacked[i]), cfg.confidence)
            bt = float(backtests[label].mean()) if label in backtests else None
            frac = bt_frac = None
            if oracle_mean is not None:
                frac_reps = replicates[f"fraction:{label}"]
                frac = percentile_interval(
                    frac_reps[np.isfinite(frac_reps)],
                    task_mean(stacked[i]) / oracle_mean,
                    cfg.confidence,
                )
                if oracle_bt is not None and label in backtests and oracle_bt.mean() > 0:
                    bt_frac = float(np.mean(backtests[label]) / np.mean(oracle_bt))
            rows.append(EvaluationRow(method, k, ci, bt, frac, bt_frac))
        return EvaluationResult(
            tasks=[str(a.task) for a in arrays],
            rows=rows,
            returns=returns,
            backtests=backtests,
            oracle_returns=oracle_returns,
            adapted=adapted,
            config=self._config_record(),
            replicates=replicates,
            bootstrap=blocks,
        )

    def _config_record(self) -> dict[str, Any]:
        """The config as JSON-able values (stored in the result, for its outputs)."""
        cfg = self.config
        skip = ("env", "oracle", "adaptation", "objective", "classical_settings")
        conf = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in skip}
        conf["classical_settings"] = asdict(cfg.classical_settings)
        conf["adaptation"] = asdict(cfg.adaptation)
        conf["objective"] = asdict(cfg.objective)
        conf["initial_capital"] = cfg.env.initial_capital
        return json_safe(conf)
