"""The meta-test protocol: does adapting from the meta-parameters beat the alternatives on
tasks never seen in meta-training?

For every held-out task and every starting point (the MAML meta-parameters, a multi-task PPO
policy, a random initialisation), the same inner loop (``metatrade.meta.adapt.adapt_online``,
same surrogate, step size and number of episodes) takes k = 0, 1, 2, 3 policy-gradient steps on
episodes drawn from the task's *adaptation window* (its train split; each step samples fresh
episodes with the current adapted policy, as in the MAML paper). Every adapted policy is then
evaluated out of sample, on the task's *test* split:

* ``test_episodes`` random test windows per task (the same windows for every start and k,
  so comparisons are paired), each an episode whose return is its P&L over C0;
* one deterministic whole-split backtest (mode actions) from the split's first bar.

Both end the same way as ``metatrade.evaluation.backtest.run_backtest``: a position still
open after the last bar is closed at that bar's close, paying the exit cost, so a return
counts every cost and a row's backtest equals the report's "Total Return".

Every start draws from streams of its own (action noise, adaptation resets, test-window
actions), seeded from ``seed`` and the start's label: a row does not change when another
row (e.g. PPO) is added or dropped.

Buy-and-hold and flat are reference rows, run on the same windows. On the synthetic regime
family (``oracle`` regimes given) every return is also reported as a fraction of the
oracle's return on the same windows (a paired ratio of means). 95% CIs come from the hierarchical bootstrap (tasks,
then windows within a task), with the same resample indices for every row.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metatrade.data.synthetic import RegimeParams, oracle_positions
from metatrade.data.task_arrays import TaskArrays, TaskId
from metatrade.evaluation.backtest import PositionRule, buy_and_hold, flat, target_to_action
from metatrade.evaluation.bootstrap import (
    ConfidenceInterval,
    hierarchical_bootstrap_means,
    percentile_interval,
)
from metatrade.evaluation.plots import CurveBand, plot_adaptation_curve
from metatrade.exact.objective import exact_loss
from metatrade.exact.windows import latest_windows
from metatrade.io import atomic_write_text, json_safe
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig, episode_bounds
from metatrade.market.family import ObjectiveSettings
from metatrade.meta.adapt import adapt_on_batch, adapt_online
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.inner import expand_to_tasks
from metatrade.meta.sampler import policy_forward

Params = dict[str, Tensor]


@dataclass(frozen=True)
class Start:
    """A starting point for adaptation: a policy module and its parameters (no task axis);
    ``inner_lrs`` are Meta-SGD per-parameter step sizes when the start learned them."""

    policy: nn.Module
    params: Params
    inner_lrs: Params | None = None


def module_params(policy: nn.Module) -> Params:
    """A module's parameters as a detached dict (the start of a trained network)."""
    return {k: v.detach().clone() for k, v in policy.named_parameters()}


def random_start(policy: nn.Module, seed: int) -> Start:
    """A freshly initialised network of the same architecture as ``policy``, seeded."""
    from metatrade.agents.policies import policy_from_spec

    dtype = next(policy.parameters()).dtype
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = policy_from_spec(policy.spec, dtype=dtype)
    return Start(fresh, module_params(fresh))


@dataclass
class ProtocolConfig:
    """Knobs of the meta-test protocol (names match the run config's ``evaluation`` and
    ``meta`` sections)."""

    adaptation_steps: tuple[int, ...] = (0, 1, 2, 3)
    """k values reported; adaptation runs to max(k), evaluating after each listed k"""
    adaptation_episodes: int = 10
    """episodes per task per inner step, from the adaptation window (train split)"""
    test_episodes: int = 10
    """random test windows per task (the same for every start and k)"""
    episode_length: int = 256
    """bars per adaptation episode (shortened to fit the shortest train split)"""
    test_episode_length: int = 256
    """bars per test window (shortened to fit half the shortest test split)"""
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    """the inner loop every start is adapted with (the run's ``meta`` settings, its estimator
    included); its batch size is ``adaptation_episodes``"""
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    """the exact objective's settings (``adaptation.estimator == "exact"``)"""
    deterministic_test: bool = False
    """test windows with the policy's mode instead of sampled actions"""
    backtest: bool = True
    """also run a deterministic whole-split backtest per task, start and k"""
    references: tuple[str, ...] = ("buy_and_hold", "flat")
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    adaptation_split: str = "train"
    test_split: str = "test"
    env: TradingEnvConfig = field(default_factory=TradingEnvConfig)
    oracle: Mapping[TaskId, RegimeParams] | None = None
    """synthetic regimes by task: report returns as a fraction of the oracle's"""
    oracle_threshold: float = 0.0
    """oracle trades only when |expected next return| exceeds this (fraction of price)"""

    def __post_init__(self) -> None:
        ks = sorted({int(k) for k in self.adaptation_steps})
        if not ks or ks[0] < 0:
            raise ValueError(
                f"ProtocolConfig.adaptation_steps={self.adaptation_steps}: use k >= 0, e.g. (0, 1, 2, 3)"
            )
        self.adaptation_steps = tuple(ks)
        unknown = set(self.references) - set(_REFERENCES)
        if unknown:
            raise ValueError(
                f"ProtocolConfig.references: unknown {sorted(unknown)}; use {sorted(_REFERENCES)}"
            )


_REFERENCES = {"buy_and_hold": buy_and_hold, "flat": flat}
_REF_LABEL = {"buy_and_hold": "buy-and-hold", "flat": "flat"}


# ------------------------------------------------------------------ rollouts on test windows
def _feasible_length(arrays: Sequence[TaskArrays], cfg: TradingEnvConfig, split: str) -> int:
    """Longest episode that fits the split of every task (>= 1)."""
    lengths = []
    for a in arrays:
        first, last, stop = episode_bounds(a, cfg.with_overrides(split=split, episode_length=None))
        lengths.append(stop - 1 - first)
    return max(1, min(lengths))


def _policy_actions(
    policy: nn.Module,
    params: Params,
    obs: np.ndarray,
    deterministic: bool,
    generators: Sequence[torch.Generator],
) -> np.ndarray:
    """Actions [R * T, E] of R stacked rows; row i samples with ``generators[i]`` alone, so
    its draws do not depend on which other rows share the batch."""
    dtype = next(iter(params.values())).dtype
    with torch.no_grad():
        out = policy_forward(policy, params, torch.as_tensor(obs, dtype=dtype))
        dist = policy.distribution
        if deterministic:
            return dist.mode(out).numpy()
        chunks = out.chunk(len(generators))
        act = torch.cat(
            [dist.sample(c, generator=g) for c, g in zip(chunks, generators, strict=True)]
        )
    return act.numpy()


def _stream_seed(seed: int, label: str, purpose: str) -> int:
    """The seed of one start's (or row's) stream for one purpose, independent of the others."""
    return (seed * 1_000_003 + zlib.crc32(f"{purpose}:{label}".encode())) % 2**62


class _LiquidatingEnv(BatchTradingEnv):
    """A BatchTradingEnv that also records, per slot, the equity at the end of its episode
    after closing any open position at the last bar's close with the exit cost (what
    ``run_backtest`` does): ``liquidated`` [T * E], refreshed at each episode end."""

    def reset(self, seed: int | None = None, starts: np.ndarray | None = None) -> np.ndarray:
        self._recording = False
        obs = super().reset(seed=seed, starts=starts)
        self.liquidated = np.full(self._t.size, np.nan)
        self._recording = True
        return obs

    def _restart(self, mask: np.ndarray, glob_starts: np.ndarray | None) -> None:
        if getattr(self, "_recording", False):
            still_open = mask & (self._pos != 0)
            if still_open.any():
                self._close_positions(still_open, self._close[self._t])
            self.liquidated[mask] = self._cash[mask]  # flat: cash is the equity
        super()._restart(mask, glob_starts)


def _rollout_returns(env: _LiquidatingEnv, act, starts: np.ndarray | None) -> np.ndarray:
    """Return (final equity / C0 - 1) of each slot's first episode, [T, E], an open position
    liquidated at the last bar's close with the exit cost.

    ``act(obs, env, position)`` gives actions [T, E]; ``starts`` [T, E] fixes the start bar
    of every slot (None: backtest mode, each split's first bar)."""
    obs = env.reset(starts=starts)
    shape = obs.shape[:2]
    done = np.zeros(shape, dtype=bool)
    final = np.zeros(shape)
    position = np.zeros(shape)
    capital = env.config.initial_capital
    for _ in range(env.max_episode_steps + 1):
        actions = act(obs, env, position)
        obs, _, terminated, truncated, info = env.step(actions)
        ending = (terminated | truncated) & ~done
        final[ending] = env.liquidated.reshape(shape)[ending]
        position = info["position"]
        done |= ending
        if done.all():
            break
    if not done.all():
        raise RuntimeError("protocol rollout: episodes did not end within max_episode_steps")
    return final / capital - 1.0


def _rule_actor(rules: Sequence[np.ndarray]):
    """Actions from per-task target positions [T][N_t] given the current bars."""
    width = max(len(r) for r in rules)
    table = np.zeros((len(rules), width), dtype=np.int8)
    for i, r in enumerate(rules):
        table[i, : len(r)] = r

    def act(obs: np.ndarray, env: BatchTradingEnv, position: np.ndarray) -> np.ndarray:
        targets = np.take_along_axis(table, env.bars, axis=1)
        return target_to_action(targets, position)

    return act


# ------------------------------------------------------------------ results
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
        est = float(_task_mean(src[a]) - _task_mean(src[b]))
        return percentile_interval(ra - rb, est, self.config.get("confidence", 0.95))

    def _normalised(self) -> dict[str, np.ndarray]:
        assert self.oracle_returns is not None
        denom = _task_mean(self.oracle_returns)
        return {k: v / denom for k, v in self.returns.items()}

    # ---- outputs
    def records(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.rows]

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
            "rows": self.records(),
            "config": self.config,
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
        """Adaptation curve: mean test return (or oracle fraction) vs k, CI bands per start."""
        use_oracle = self.oracle_returns is not None
        curves: dict[str, CurveBand] = {}
        refs: dict[str, tuple[float, float, float]] = {}
        for r in self.rows:
            ci = (
                r.oracle_fraction if use_oracle and r.oracle_fraction is not None else r.mean_return
            )
            if r.k is None:
                refs[r.method] = (ci.estimate, ci.low, ci.high)
                continue
            band = curves.setdefault(r.method, CurveBand([], [], [], []))
            band.ks.append(r.k)  # type: ignore[attr-defined]
            band.estimate.append(ci.estimate)  # type: ignore[attr-defined]
            band.low.append(ci.low)  # type: ignore[attr-defined]
            band.high.append(ci.high)  # type: ignore[attr-defined]
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
        if self.seen:
            title = (
                f"WARNING: NOT HELD OUT: {', '.join(self.seen)} were meta-training tasks "
                f"(--allow-seen)\n{title}"
            )
        t = Table(title=title)
        t.add_column("method")
        t.add_column("k", justify="right")
        t.add_column("test-window return %", justify="right")
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
                cells += ["-", "-"] if f is None else [
                    f"{f.estimate:+.3f}", f"[{f.low:+.3f}, {f.high:+.3f}]"
                ]  # fmt: skip
            t.add_row(*cells)
        return t

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


def _task_mean(v: np.ndarray) -> float:
    return float(v.mean(axis=1).mean())


# ------------------------------------------------------------------ the protocol
def _dtype(params: Params) -> torch.dtype:
    return next(iter(params.values())).dtype


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
        starts: Mapping[str, Start | tuple[nn.Module, Params]],
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
        starts = {k: (v if isinstance(v, Start) else Start(*v)) for k, v in starts.items()}
        if not starts:
            raise ValueError("MetaTestProtocol.run: no starts; pass e.g. {'MAML': Start(...)}")
        num_tasks, num_eps = len(arrays), cfg.test_episodes
        adapt_len = min(cfg.episode_length, _feasible_length(arrays, cfg.env, cfg.adaptation_split))
        test_len = min(
            cfg.test_episode_length,
            max(1, _feasible_length(arrays, cfg.env, cfg.test_split) // 2),
        )
        train_cfg = cfg.env.with_overrides(split=cfg.adaptation_split, episode_length=adapt_len)
        test_cfg = cfg.env.with_overrides(split=cfg.test_split, episode_length=test_len)
        bt_cfg = cfg.env.with_overrides(split=cfg.test_split, episode_length=None)
        # Explicit test windows: every row (start, k, reference) trades exactly these.
        win_rng = np.random.default_rng(cfg.seed + 10_007)
        bounds = [episode_bounds(a, test_cfg) for a in arrays]
        windows = np.stack([win_rng.integers(f, last + 1, size=num_eps) for f, last, _ in bounds])
        test_env = _LiquidatingEnv(arrays, num_eps, test_cfg)
        bt_env = _LiquidatingEnv(arrays, 1, bt_cfg) if cfg.backtest else None

        returns: dict[str, np.ndarray] = {}
        backtests: dict[str, np.ndarray] = {}
        adapted: dict[tuple[str, int], Params] = {}
        for label, start in starts.items():
            snapshots = self._adapt_start(label, start, arrays, train_cfg)
            for k in cfg.adaptation_steps:
                adapted[(label, k)] = snapshots[k]
        # Evaluate every adapted policy; rows sharing an architecture go in one batched env.
        groups: dict[str, list[tuple[str, nn.Module, Params]]] = {}
        for (label, k), params in adapted.items():
            policy = starts[label].policy
            key = repr(getattr(policy, "spec", id(policy))) + repr(
                [(n, tuple(v.shape), v.dtype) for n, v in params.items()]
            )
            groups.setdefault(key, []).append((f"{label}@k{k}", policy, params))
        for rows in groups.values():
            policy = rows[0][1]
            stacked = {n: torch.cat([r[2][n] for r in rows]) for n in rows[0][2]}
            reps = len(rows)
            env = _LiquidatingEnv(arrays * reps, num_eps, test_cfg)
            gens = [
                torch.Generator().manual_seed(_stream_seed(cfg.seed, r[0], "test")) for r in rows
            ]
            out = _rollout_returns(
                env,
                lambda o, e, p, g=gens, pi=policy, th=stacked: _policy_actions(
                    pi, th, o, cfg.deterministic_test, g
                ),
                np.tile(windows, (reps, 1)),
            )
            for i, (row, _, _) in enumerate(rows):
                returns[row] = out[i * num_tasks : (i + 1) * num_tasks]
            if cfg.backtest:
                env = _LiquidatingEnv(arrays * reps, 1, bt_cfg)
                out = _rollout_returns(
                    env,
                    lambda o, e, p, pi=policy, th=stacked: _policy_actions(pi, th, o, True, []),
                    None,
                )[:, 0]
                for i, (row, _, _) in enumerate(rows):
                    backtests[row] = out[i * num_tasks : (i + 1) * num_tasks]

        ref_rules: dict[str, PositionRule] = {
            _REF_LABEL[name]: _REFERENCES[name]() for name in cfg.references
        }
        oracle_returns = oracle_bt = None
        if cfg.oracle is not None:
            missing = [str(a.task) for a in arrays if a.task not in cfg.oracle]
            if missing:
                raise KeyError(f"ProtocolConfig.oracle has no regime for tasks {missing}")
        for name, rule in ref_rules.items():
            act = _rule_actor([rule.positions(a) for a in arrays])
            returns[name] = _rollout_returns(test_env, act, windows)
            if bt_env is not None:
                backtests[name] = _rollout_returns(bt_env, act, None)[:, 0]
        if cfg.oracle is not None:
            act = _rule_actor(
                [
                    oracle_positions(a.close, cfg.oracle[a.task], cfg.oracle_threshold)
                    for a in arrays
                ]
            )
            oracle_returns = _rollout_returns(test_env, act, windows)
            if bt_env is not None:
                oracle_bt = _rollout_returns(bt_env, act, None)[:, 0]
            if _task_mean(oracle_returns) <= 0:
                raise ValueError(
                    f"the oracle loses money on average over the test windows of {len(arrays)} "
                    "tasks; its return cannot normalise; raise oracle_threshold to cover costs"
                )
        return self._summarise(arrays, returns, backtests, oracle_returns, oracle_bt, adapted)

    def _adapt_start(
        self, label: str, start: Start, arrays: list[TaskArrays], train_cfg: TradingEnvConfig
    ) -> dict[int, Params]:
        """Parameters [T, ...] of ``start`` after each k in ``adaptation_steps`` inner steps on
        the tasks' adaptation split: fresh episodes per step (sampled estimator), or the
        ``adaptation_episodes`` windows that end at the split's last bar (exact)."""
        cfg = self.config
        max_k = max(cfg.adaptation_steps)
        params = expand_to_tasks({k: v.detach() for k, v in start.params.items()}, len(arrays))
        adaptation = replace(cfg.adaptation, episodes_per_task=cfg.adaptation_episodes)
        if adaptation.estimator == "exact":
            windows = latest_windows(
                arrays,
                num_windows=cfg.adaptation_episodes,
                config=train_cfg,
                vol_bars=cfg.objective.vol_bars,
                dtype=_dtype(params),
            )
            loss = partial(exact_loss, normalize=cfg.objective.normalize, risk=cfg.objective.risk)
            steps = adapt_on_batch(
                start.policy,
                params,
                windows,
                config=adaptation,
                loss=loss,
                num_steps=max_k,
                inner_lrs=start.inner_lrs,
            )
            return {k: steps[k] for k in cfg.adaptation_steps}
        gen = torch.Generator().manual_seed(_stream_seed(cfg.seed, label, "adapt"))
        env_seed = _stream_seed(cfg.seed, label, "env")
        train_env = BatchTradingEnv(arrays, cfg.adaptation_episodes, train_cfg, seed=env_seed)
        # k inner steps, each on fresh adaptation-window episodes of the current policy;
        # step k's batch resets the env with seed cfg.seed + 100 k.
        result = adapt_online(
            start.policy,
            params,
            train_env,
            config=adaptation,
            num_steps=max_k,
            inner_lrs=start.inner_lrs,
            generator=gen,
            measure_final=False,
            env_seed=lambda j: cfg.seed + 100 * (j + 1),
            keep=cfg.adaptation_steps,
        )
        return result.snapshots

    def _summarise(
        self,
        arrays: list[TaskArrays],
        returns: dict[str, np.ndarray],
        backtests: dict[str, np.ndarray],
        oracle_returns: np.ndarray | None,
        oracle_bt: np.ndarray | None,
        adapted: dict[tuple[str, int], Params],
    ) -> EvaluationResult:
        cfg = self.config
        labels = list(returns)
        stacked = np.stack([returns[k] for k in labels])  # [M, T, E]
        if oracle_returns is not None:  # the oracle shares the resample indices (paired)
            stacked = np.concatenate([stacked, oracle_returns[None]])
        rng = np.random.default_rng(cfg.seed + 99)
        reps = hierarchical_bootstrap_means(stacked, num_resamples=cfg.bootstrap_samples, rng=rng)
        replicates = {f"return:{k}": reps[i] for i, k in enumerate(labels)}
        oracle_mean = None
        if oracle_returns is not None:
            # Ratio of means (pooled over tasks): robust to tasks whose oracle earns ~0.
            oracle_mean = _task_mean(oracle_returns)
            with np.errstate(divide="ignore", invalid="ignore"):
                replicates.update(
                    {f"fraction:{k}": reps[i] / reps[-1] for i, k in enumerate(labels)}
                )
        rows = []
        for i, label in enumerate(labels):
            method, _, kk = label.partition("@k")
            k = int(kk) if kk else None
            ci = percentile_interval(reps[i], _task_mean(stacked[i]), cfg.confidence)
            bt = float(backtests[label].mean()) if label in backtests else None
            frac = bt_frac = None
            if oracle_mean is not None:
                frac_reps = replicates[f"fraction:{label}"]
                frac = percentile_interval(
                    frac_reps[np.isfinite(frac_reps)],
                    _task_mean(stacked[i]) / oracle_mean,
                    cfg.confidence,
                )
                if oracle_bt is not None and label in backtests and oracle_bt.mean() > 0:
                    bt_frac = float(np.mean(backtests[label]) / np.mean(oracle_bt))
            rows.append(EvaluationRow(method, k, ci, bt, frac, bt_frac))
        skip = ("env", "oracle", "adaptation", "objective")
        conf = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in skip}
        conf["adaptation"] = asdict(cfg.adaptation)
        conf["objective"] = asdict(cfg.objective)
        conf["initial_capital"] = cfg.env.initial_capital
        return EvaluationResult(
            tasks=[str(a.task) for a in arrays],
            rows=rows,
            returns=returns,
            backtests=backtests,
            oracle_returns=oracle_returns,
            adapted=adapted,
            config=json_safe(conf),
            replicates=replicates,
        )
