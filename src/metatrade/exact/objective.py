"""The exact expected P&L of a stochastic trading policy over historical windows.

Prices are exogenous and, with ``TradingEnvConfig(observation="position")``, the policy sees
only the feature window and its position s in (short, flat, long). So the distribution q[t]
of the position at decision bar t follows a Markov chain over three states,

    q[t+1] = q[t] M[t] S[t],   M[t][s, s'] = sum of pi(a | window_t, s) over the actions a
                               that take s to s' (the action space's table in
                               ``metatrade.market.rules``: with the five orders invalid ones
                               act as HOLD and a reversal takes two bars; with target
                               positions M[s, s'] = pi(s' | window_t, s)),
                               S[t] = square-off at a session's last bar,

and the expected P&L of a window (fraction of the initial capital, costs included) is

    E[R] = sum_t sum_{s, s'} q[t][s] M[t][s, s'] r[t](s, s'),
    r[t](s, s') = s * gap[t] + s' * bar[t] - charge of s -> s' - square-off charge of s',

with the ledger's rules and cost functions (``metatrade.market.rules.transition_charges`` and
``order_charge``, the ones ``BacktestingEngine`` and the envs use): an order on bar t fills at
open[t+1] (slippage against the trader), pays its fee plus the proportional cost of the fill
notional (a reversal pays the close and the open); the account is marked at close[t+1]. A
position still open at the window's last close is closed there, paying the exit, as every
evaluation ledger does (``windows.squared`` is 1 on that bar). No sampling: zero Monte Carlo
variance, O(N x 9) beyond the policy forwards, differentiable twice (torch.func.grad of
grad), so the MAML meta-gradient through an inner step on it is exact. Moody and Saffell
(2001, direct reinforcement) and Lim, Zohren and Roberts (2019, deep momentum networks)
differentiate the P&L of deterministic positions; this is the expectation for a stochastic
policy over either action space (taken from the policy's Categorical size: 5 orders or 3
target positions).

The chain is evaluated in log depth (a Hillis-Steele scan of 3x3 matrix products), not by a
Python loop over bars. An optional variance term uses the same scan on the 9x9 block matrix
of the first two moments of the accumulated P&L.

Against the ledger: exact (up to float rounding) when every entry trades the same quantity
(``metatrade.market.FixedUnitsSizer``); otherwise each window trades the quantity the sizer
gives at its first bar instead of re-sizing at each entry from the equity then (the one
approximation; ``metatrade.exact.windows``, measured in docs/exact.md). The ledger's ruin
termination (equity <= ruin_fraction * C0) is not modelled: it needs a 50% loss in a window.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from metatrade.exact.windows import PnlWindows
from metatrade.market import rules
from metatrade.market.rules import RULES

POSITIONS = (-1, 0, 1)
"""state index 0, 1, 2 = short, flat, long (the observation's position entry)"""
_FLAT = 1
TRANSITION_TABLES = {r.num_actions: torch.from_numpy(r.transition_table()) for r in RULES.values()}
"""Categorical size -> G[s, a, s'] = 1 where action a takes position s to s' (the rules')"""


def _as_windows(windows: PnlWindows | Mapping[str, Tensor]) -> PnlWindows:
    return windows if isinstance(windows, PnlWindows) else PnlWindows.from_tensors(dict(windows))


def action_probs(policy, params: Mapping[str, Tensor], windows: PnlWindows) -> Tensor:
    """pi(a | window_t, s) for every decision bar and position, [..., N, 3, A] (A = 5 orders
    or 3 target positions).

    Calls ``policy.logits_by_position`` (``metatrade.agents.policies``): the first layer of the
    MLP runs once per bar, not once per position.
    """
    dist = getattr(policy, "distribution", None)
    if getattr(dist, "n", None) not in TRANSITION_TABLES:
        raise ValueError(
            f"policy distribution {dist!r}: the exact objective needs a Categorical over an "
            f"action space of metatrade.market.rules (sizes {sorted(TRANSITION_TABLES)})"
        )
    feats = windows.features
    accounts = torch.tensor(POSITIONS, dtype=feats.dtype, device=feats.device).unsqueeze(
        -1
    )  # [3, 1]
    return torch.softmax(policy.logits_by_position(params, feats, accounts), dim=-1)


def bar_rewards(windows: PnlWindows) -> tuple[Tensor, Tensor]:
    """(r [..., N, 3, 3], square-off mask [..., N]): r[t][s, s'] is the P&L (fraction of C0)
    of holding s through the gap and s' through bar t+1, net of the charges of the orders
    s -> s' (``rules.transition_charges``: a reversal pays both legs) and of a square-off or
    the final exit of s' at the close of bar t+1 (``rules.order_charge``), each order at its
    side's own rate too (``buy_rate`` / ``sell_rate``: a long entry and a short's exit buy;
    a short entry, a long's exit and a long's square-off sell). A window trades one unit of
    notional ``notional`` (Q_w open / C0), so quantity is 1 in these calls."""
    w = windows
    fees = {"entry_fee": w.entry_fee.unsqueeze(-1), "exit_fee": w.exit_fee.unsqueeze(-1)}
    rates = {"proportional_rate": w.prop.unsqueeze(-1), "slippage_rate": w.slip.unsqueeze(-1)}
    # side-only rates (stamp duty on a buy, STT on a sell): each leg pays its own side's
    rates |= {"buy_rate": w.buy_rate.unsqueeze(-1), "sell_rate": w.sell_rate.unsqueeze(-1)}
    orders = rules.transition_charges(w.notional, quantity=1.0, **fees, **rates)
    exit_fee = w.squared * fees["exit_fee"]
    square = {  # closing a side-s position is an order on side -s
        s: rules.order_charge(w.square, order_side=-s, quantity=1.0, fee=exit_fee, **rates)
        for s in (-1, 1)
    }
    rows = []
    for s in POSITIONS:
        row = []
        for s2 in POSITIONS:
            held = s * w.gap + s2 * w.bar - orders[(s, s2)]
            row.append(held - square[s2] if s2 != 0 else held)
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2), w.squared


def transitions(probs: Tensor) -> Tensor:
    """M[..., t, s, s'] = sum of pi(a | t, s) over the actions a taking s to s' (the rules'
    table of the action space with probs.shape[-1] actions)."""
    table = TRANSITION_TABLES[probs.shape[-1]].to(probs)
    return torch.einsum("...sa,sat->...st", probs, table)


def _square_off(m: Tensor, squared: Tensor) -> Tensor:
    """M S: where ``squared``, the mass that ends a bar short or long ends it flat."""
    flat = m.sum(-1, keepdim=True)
    onehot = torch.zeros(3, dtype=m.dtype, device=m.device)
    onehot[_FLAT] = 1.0
    sq = squared[..., None, None]
    return m * (1.0 - sq) + sq * flat * onehot


def prefix_products(m: Tensor) -> Tensor:
    """P[..., t] = m[..., 0] @ ... @ m[..., t] over axis -3, in log2(N) batched matmuls
    (Hillis and Steele's inclusive scan; matrix order kept: earlier bars on the left)."""
    n, k = m.shape[-3], 1
    while k < n:
        m = torch.cat([m[..., :k, :, :], m[..., :-k, :, :] @ m[..., k:, :, :]], dim=-3)
        k *= 2
    return m


def recursion_from_probs(
    probs: Tensor, windows: PnlWindows | Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """The recursion for given action probabilities ``probs`` [..., N, 3, A] (position
    index 0, 1, 2 = short, flat, long): ``transitions`` M, ``rewards`` r, ``kernel`` K = M S
    [..., N, 3, 3], ``occupancy`` q [..., N, 3] (position before each decision, from flat)
    and ``expected_reward`` [..., N] (the expected P&L of each step, fraction of C0)."""
    w = _as_windows(windows)
    m = transitions(probs)
    r, squared = bar_rewards(w)
    kernel = _square_off(m, squared)
    prefix = prefix_products(kernel)[..., :-1, _FLAT, :]  # q[t] = e_flat K[0] .. K[t-1]
    start = torch.zeros_like(m[..., :1, _FLAT, :])
    start[..., _FLAT] = 1.0
    q = torch.cat([start, prefix], dim=-2)
    expected = torch.einsum("...ts,...tsu,...tsu->...t", q, m, r)
    return {
        "probs": probs,
        "transitions": m,
        "rewards": r,
        "kernel": kernel,
        "occupancy": q,
        "expected_reward": expected,
    }


def position_recursion(
    policy, params: Mapping[str, Tensor], windows: PnlWindows | Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``recursion_from_probs`` of the policy's probabilities (``probs`` [..., N, 3, A]
    included in the result): every quantity of the recursion, for tests and diagnostics."""
    w = _as_windows(windows)
    return recursion_from_probs(action_probs(policy, params, w), w)


def expected_pnl(
    policy, params: Mapping[str, Tensor], windows: PnlWindows | Mapping[str, Tensor]
) -> Tensor:
    """Expected P&L of each window [...] (fraction of C0, costs included), from flat."""
    return position_recursion(policy, params, windows)["expected_reward"].sum(-1)


def pnl_moments(
    policy, params: Mapping[str, Tensor], windows: PnlWindows | Mapping[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """(E[R], E[R^2]) of each window's P&L R, [...] each.

    With m1[s] = E[R_<t 1{s_t = s}] and m2[s] = E[R_<t^2 1{s_t = s}], the row vector
    [q, m1, m2] is multiplied each bar by [[K, Kr, Kr2], [0, K, 2 Kr], [0, 0, K]] where
    Kr = (M * r) S and Kr2 = (M * r^2) S: linear, so the same log-depth scan applies (9x9).
    """
    w = _as_windows(windows)
    m = transitions(action_probs(policy, params, w))
    r, squared = bar_rewards(w)
    k, kr, kr2 = (_square_off(m * x, squared) for x in (torch.ones_like(r), r, r * r))
    z = torch.zeros_like(k)
    block = torch.cat(
        [
            torch.cat([k, kr, kr2], dim=-1),
            torch.cat([z, k, 2.0 * kr], dim=-1),
            torch.cat([z, z, k], dim=-1),
        ],
        dim=-2,
    )  # [..., N, 9, 9]
    final = prefix_products(block)[..., -1, _FLAT, :]  # start: q = e_flat, m1 = m2 = 0
    return final[..., 3:6].sum(-1), final[..., 6:9].sum(-1)


def exact_loss(
    policy,
    params: Mapping[str, Tensor],
    windows: PnlWindows | Mapping[str, Tensor],
    *,
    normalize: bool = True,
    risk: float = 0.0,
) -> Tensor:
    """Negative mean expected P&L of the windows: a per-task loss for ``vmap``, twice
    differentiable.

    ``normalize``: each window's P&L is divided by (its causal volatility ``vol`` x N bars),
    i.e. mean P&L per bar in units of the task's volatility, so tasks of different
    volatility and timeframe weigh alike. ``risk`` > 0 subtracts risk * Var(R) / (vol^2 N)
    (a mean-variance objective; for a position held throughout Var(R) ~ N vol^2).
    """
    w = _as_windows(windows)
    var = None
    if risk:
        mean, second = pnl_moments(policy, params, w)
        var = (second - mean * mean).clamp_min(0.0)
    else:
        mean = expected_pnl(policy, params, w)
    if normalize:
        vol_n = w.vol.clamp_min(1e-8) * w.window_bars
        mean = mean / vol_n
        var = None if var is None else var / (vol_n * w.vol.clamp_min(1e-8))
    score = mean if var is None else mean - risk * var
    return -score.mean()
