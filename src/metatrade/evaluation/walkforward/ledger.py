"""Trading the folds of one task in the ledger, every row (start x k, references) in step.

Each row has its own ``TradingEnv`` (and so its own ``BacktestingEngine``) over the
walk-forward rows of the task; between folds its features are swapped
(``TradingEnv.set_features``: the same rows, the fold's normalisation). Two account conventions (``carry``):

* carry (live account): one episode from the first fold's first decision to the last
  bar. Position, cash and equity run on across fold boundaries; only the policy's
  parameters and the features' normalisation change there. Per-fold return
  ``E(b_f) / E(a_f) - 1``; the stitched equity is C0 times their product.
* flatten (fixed-capital account): each fold starts flat at C0; a position still open at
  the fold's last bar is closed at its close, paying the exit cost. Gains are withdrawn
  and losses refilled at fold ends, so the stitched equity is C0 plus the sum of the
  fold P&Ls (and every fold is an independent trial of its adapted policy).

A row whose equity falls to ``ruin_fraction * C0`` stops trading (carry: for good;
flatten: for the rest of the fold). A position open after the last bar is closed at its
close, paying the exit cost, as in ``run_backtest`` (``TradingEnv.liquidate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metatrade.agents.networks.base import Policy
from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.backtest import target_to_action
from metatrade.market.config import TradingEnvConfig
from metatrade.market.env import TradingEnv
from metatrade.meta.sampler import make_forward

Params = dict[str, Tensor]


@dataclass
class Row:
    """One line of the table: a policy row (``policy`` and per-fold params) or a rule row
    (``targets``: position per task row, e.g. buy-and-hold)."""

    label: str
    start: str
    k: int | None
    policy: Policy | None = None
    targets: np.ndarray | None = None


@dataclass
class RowRecord:
    """The stitched out-of-sample record of one row on one task."""

    equity: np.ndarray  # [n] stitched equity at each bar close from the first decision row
    positions: np.ndarray  # [n] position held over the return into bar j (entry 0: 0)
    fold_returns: np.ndarray  # [folds] fold P&L / fold start equity
    fold_pnl: np.ndarray  # [folds] money, the instrument's currency
    trades: list[Any] = field(default_factory=list)  # closed round trips (engine Trades)
    first_action: list[int] = field(default_factory=list)  # [folds] first decision per fold
    first_probs: list[list[float]] = field(default_factory=list)  # [folds][A] its probabilities
    ruin_at: list[int] = field(
        default_factory=list
    )  # record indices where the ruin rule stopped it

    @property
    def notional(self) -> float:
        """Traded notional, both sides: sum of quantity x (entry + exit fill price)."""
        return float(sum(t.quantity * (t.entry_price + t.exit_price) for t in self.trades))


def _decide(
    policy: Policy, params: Params, obs: np.ndarray, generator: torch.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Actions and probabilities of R rows sharing ``policy``: params [R, ...], obs [R, D]."""
    dtype = next(iter(params.values())).dtype
    with torch.no_grad():
        out = make_forward(policy, params)(torch.as_tensor(obs, dtype=dtype)[:, None])[:, 0]
        dist = policy.distribution
        act = dist.mode(out) if generator is None else dist.sample(out, generator=generator)
        probs = torch.softmax(out, dim=-1)
    return act.numpy().astype(np.int64), probs.numpy()


def decide_one(
    policy: Policy, params: Params, obs: np.ndarray, generator: torch.Generator | None = None
) -> tuple[int, np.ndarray]:
    """The decision of one policy on one observation (what ``signal`` does): its mode, or an
    action drawn with ``generator``."""
    act, probs = _decide(policy, {k: v[None] for k, v in params.items()}, obs[None], generator)
    return int(act[0]), probs[0]


class _Ledger:
    """``trade_task``'s state: one env and record per row, the policy rows grouped by their
    shared module (one batched forward per group), and which rows still trade."""

    def __init__(
        self,
        base: TaskArrays,
        cfg: TradingEnvConfig,
        rows: Sequence[Row],
        *,
        num_folds: int,
        first: int,
        last: int,
        carry: bool,
        generator: torch.Generator | None,
    ) -> None:
        self.rows, self.first, self.carry, self.generator = rows, first, carry, generator
        self.envs = [TradingEnv(base, cfg) for _ in rows]
        self.c0 = c0 = float(cfg.initial_capital)
        n = last - first + 1
        self.recs = [
            RowRecord(
                np.full(n, c0), np.zeros(n, np.int8), np.zeros(num_folds), np.zeros(num_folds)
            )
            for _ in rows
        ]
        self.alive = np.ones(len(rows), dtype=bool)
        self.offset = np.zeros(len(rows))  # flatten: P&L banked by earlier folds
        self.groups: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            if r.policy is not None:
                self.groups.setdefault(id(r.policy), []).append(i)

    def stacked_params(
        self, f: int, params_by_fold: Callable[[int, Row], Params]
    ) -> dict[int, Params]:
        """Each group's parameters on fold f, stacked [R, ...]."""
        rows = self.rows
        return {
            key: {
                n_: torch.stack([params_by_fold(f, rows[i])[n_] for i in idx])
                for n_ in params_by_fold(f, rows[idx[0]])
            }
            for key, idx in self.groups.items()
        }

    def open_fold(self, f: int, a: int, feats: np.ndarray) -> np.ndarray:
        """Swap in fold f's features; reset to bar ``a`` (first fold, or flatten); returns
        each row's equity at the fold start."""
        start_eq = np.empty(len(self.rows))
        for i, env in enumerate(self.envs):
            env.set_features(feats)
            if f == 0 or not self.carry:
                env.reset(options={"start": a})
                self.alive[i] = True
            start_eq[i] = env.engine.equity
        return start_eq

    def actions(self, t: int, a: int, stacked: dict[int, Params], obs: np.ndarray) -> np.ndarray:
        """Every row's action at bar t (policy rows by group, rule rows from their targets);
        the fold's first decision (t == a) and its probabilities are recorded."""
        rows, recs = self.rows, self.recs
        actions = np.zeros(len(rows), dtype=np.int64)  # every row is a policy or a rule
        for key, idx in self.groups.items():
            policy = rows[idx[0]].policy
            assert policy is not None, "groups hold policy rows only"
            act, probs = _decide(policy, stacked[key], obs[idx], self.generator)
            actions[idx] = act
            if t == a:
                for j, i in enumerate(idx):
                    recs[i].first_action.append(int(act[j]))
                    recs[i].first_probs.append(probs[j].tolist())
        for i, r in enumerate(rows):
            if r.targets is not None:
                env = self.envs[i]
                pos = np.int8(env.engine.position)
                actions[i] = int(target_to_action(r.targets[t], pos, env.config.actions))
        return actions

    def step(self, t: int, actions: np.ndarray, obs: np.ndarray) -> None:
        """Step every live row's env; ``obs`` is updated in place. A ruined row liquidates
        and stops; a stopped row's equity stays flat."""
        recs, offset, alive = self.recs, self.offset, self.alive
        for i, env in enumerate(self.envs):
            j = t + 1 - self.first
            if not alive[i]:
                recs[i].equity[j] = recs[i].equity[j - 1]
                continue
            o, _, terminated, _, info = env.step(actions[i])
            obs[i] = o
            recs[i].equity[j] = offset[i] + info["equity"]
            recs[i].positions[j] = info["position"]
            if terminated:
                recs[i].equity[j] = offset[i] + env.liquidate()
                recs[i].ruin_at.append(j)
                alive[i] = False

    def close_fold(self, f: int, b: int, start_eq: np.ndarray, *, last_fold: bool) -> None:
        """Fold P&L and return per row; flatten (or the last fold) liquidates and banks."""
        recs, offset, carry = self.recs, self.offset, self.carry
        for i, env in enumerate(self.envs):
            j = b - self.first
            if not carry or last_fold:
                if self.alive[i]:
                    recs[i].equity[j] = offset[i] + env.liquidate()
                recs[i].trades.extend(env.engine.trades)
            end_eq = recs[i].equity[j] - offset[i]
            recs[i].fold_pnl[f] = end_eq - start_eq[i]
            recs[i].fold_returns[f] = end_eq / start_eq[i] - 1.0
            if not carry:
                offset[i] += end_eq - self.c0


def trade_task(
    arrays_by_fold: Callable[[int], TaskArrays],
    folds: Sequence[Any],
    rows: Sequence[Row],
    params_by_fold: Callable[[int, Row], Params],
    env_config: TradingEnvConfig,
    *,
    carry: bool,
    generator: torch.Generator | None = None,
) -> list[RowRecord]:
    """Trade every fold of one task for every row; returns one stitched record per row.

    ``arrays_by_fold(f)`` gives fold f's arrays (its features); ``params_by_fold(f, row)``
    the row's parameters on fold f (policy rows only). ``generator`` None: mode actions.
    """
    first, last = folds[0].trade[0], folds[-1].trade[1]
    arrays0 = arrays_by_fold(0)
    cfg = env_config.with_overrides(split="wf", episode_length=None)
    base = replace(arrays0, splits={**arrays0.splits, "wf": (first, last + 1)})
    ledger = _Ledger(
        base,
        cfg,
        rows,
        num_folds=len(folds),
        first=first,
        last=last,
        carry=carry,
        generator=generator,
    )
    for f, fold in enumerate(folds):
        a, b = fold.trade
        feats = arrays_by_fold(f).select_features(cfg.features).features
        stacked = ledger.stacked_params(f, params_by_fold)
        start_eq = ledger.open_fold(f, a, feats)
        obs = np.stack([env.observe() for env in ledger.envs])
        for t in range(a, b):
            ledger.step(t, ledger.actions(t, a, stacked, obs), obs)
        ledger.close_fold(f, b, start_eq, last_fold=f == len(folds) - 1)
    return ledger.recs
