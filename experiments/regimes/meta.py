"""The research prototype's policy, objective and MAML (pure torch, no env, no recursion).

With target actions (short, flat, long), no costs and a policy that ignores its position, the
expected P&L of a window is exactly sum_t (p_long - p_short)(x_t) r_{t+1}: the exact
objective of ``metatrade.exact`` in closed form. The loss is its negative mean per bar over
the task's scale (std of its returns), as ``exact_loss(normalize=True)``.

Policies (parameters as a dict, a pure function of them): ``linear`` (logits = W x + b),
``mlp`` (tanh MLP, CleanRL's init), ``skip`` (the MLP plus a linear path W x). MAML: one (or
k) inner step(s) theta' = theta - alpha * grad L_adapt(theta) with a scalar alpha or Meta-SGD
per-parameter rates (Li et al., 2017), the meta-loss L_eval(theta') differentiated through
the step (second order), Adam on theta (and alpha).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from experiments.regimes.tasks import TaskSet

Params = dict[str, Tensor]


@dataclass
class Settings:
    policy: str = "linear"  # linear | mlp | skip
    hidden: int = 32
    inner_lr: float = 30.0
    meta_sgd: bool = True
    inner_steps: int = 1
    iterations: int = 1000
    lr: float = 3e-3
    rate_lr: float = 0.02
    meta_batch: int = 16
    adapt_bars: int = 512
    eval_bars: int = 512
    zero_init: bool = False  # linear weights start at 0 (else CleanRL-like small init)
    init_scale: float = 0.01
    seed: int = 0
    raw_rates: bool = False  # Meta-SGD rates as raw parameters (the product's) instead of log
    precond: bool = False  # Meta-Curvature-like learned F x F preconditioner of the w step
    precond_lr: float = 3e-3
    fixed_start: bool = False  # the linear weights' start stays 0 (only rates, bias learned)
    group_gain: float = 0.0  # > 0: per feature group, w_g (1 + exp(a_g) mean(w_g^2))
    gain: float = 0.0  # > 0: the linear path's weights w (1 + exp(g) w^2), g from log(gain)
    time_limit: float = 300.0
    log_every: int = 0


def init_params(s: Settings, n_feat: int) -> Params:
    g = torch.Generator().manual_seed(s.seed)

    def orth(rows: int, cols: int, gain: float) -> Tensor:
        w = torch.empty(rows, cols)
        torch.nn.init.orthogonal_(w, gain=gain, generator=g)
        return w

    p: Params = {}
    if s.policy in ("mlp", "skip"):
        p["w1"] = orth(s.hidden, n_feat, math.sqrt(2))
        p["b1"] = torch.zeros(s.hidden)
        p["w2"] = orth(3, s.hidden, 0.01)
    if s.policy in ("linear", "skip"):
        p["w"] = torch.zeros(3, n_feat) if s.zero_init else orth(3, n_feat, s.init_scale)
        if s.gain:
            p["gain"] = torch.full((3, n_feat), math.log(s.gain))
        if s.group_gain:
            p["group_gain"] = torch.full((len(GROUPS) + 1,), math.log(s.group_gain))
    p["b"] = torch.zeros(3)
    return {k: v.requires_grad_() for k, v in p.items()}


GROUPS: list[list[int]] = []
"""feature-column groups of the group gain (set by the runner from the feature names)"""


def _group_gain(w: Tensor, a: Tensor) -> Tensor:
    """w [3, F] with each group's columns scaled by 1 + exp(a_g) * mean square of the group."""
    scale = torch.ones(w.shape[-1], dtype=w.dtype)
    for gi, idx in enumerate(GROUPS):
        ms = (w[:, idx] ** 2).mean()
        scale = scale.index_put((torch.tensor(idx),), 1.0 + a[gi].exp() * ms)
    return w * scale


def logits(p: Params, x: Tensor) -> Tensor:
    b = p["b"]
    if "group_gain" in p:
        b = b * (1.0 + p["group_gain"][-1].exp() * (b**2).mean())
    out = b
    if "w1" in p:
        out = out + torch.tanh(x @ p["w1"].T + p["b1"]) @ p["w2"].T
    if "w" in p:
        w = p["w"]
        if "gain" in p:  # a learned odd gain: strong (post-step) weights count more
            w = w * (1.0 + p["gain"].exp() * w * w)
        if "group_gain" in p:
            w = _group_gain(w, p["group_gain"])
        out = out + x @ w.T
    return out


def expected_position(p: Params, x: Tensor) -> Tensor:
    pr = torch.softmax(logits(p, x), dim=-1)
    return pr[..., 2] - pr[..., 0]


def mode_position(p: Params, x: Tensor) -> Tensor:
    return logits(p, x).argmax(-1).to(x.dtype) - 1.0


def loss(p: Params, x: Tensor, nxt: Tensor, scale: Tensor) -> Tensor:
    """-(mean expected P&L per bar) / scale; x [N, F], nxt [N], scale []."""
    return -(expected_position(p, x) * nxt).mean() / scale


def adapt(
    p: Params, rates: Params | float, x: Tensor, nxt: Tensor, scale: Tensor, steps: int
) -> Params:
    """``steps`` inner steps on one task (differentiable: create_graph through torch.func)."""
    for _ in range(steps):
        g = torch.func.grad(loss)(p, x, nxt, scale)
        if isinstance(rates, dict) and "w@M" in rates:  # a learned full preconditioner
            g = {**g, "w": g["w"] @ rates["w@M"]}
        p = {k: p[k] - (rates[k] if isinstance(rates, dict) else rates) * g[k] for k in p}
    return p


def _rate(v: Tensor, s: Settings) -> Tensor:
    """A Meta-SGD rate from its parameter: exp (log space) or as is, kept >= 0 (raw)."""
    return v.clamp_min(0.0) if s.raw_rates else v.exp()


def _windows(ts: TaskSet, idx: np.ndarray, cuts: np.ndarray, start: int, length: int):
    rows = torch.as_tensor(cuts[:, None] + np.arange(start, start + length)[None, :])
    t = torch.as_tensor(idx)[:, None]
    return ts.x[t, rows], ts.nxt[t, rows]


def meta_train(ts: TaskSet, s: Settings) -> tuple[Params, Params | float, dict]:
    """MAML on the training tasks: per iteration ``meta_batch`` tasks, a cut c uniform per
    task, adapt on the ``adapt_bars`` before c, meta-loss on the ``eval_bars`` from c."""
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    p = init_params(s, ts.x.shape[-1])
    log_rates: Params = {}
    groups = [{"params": [v for k, v in p.items() if not (s.fixed_start and k == "w")], "lr": s.lr}]
    if s.meta_sgd:  # Meta-SGD rates learned in log space (positive, scale-free steps)
        log_rates = {
            k: torch.full_like(v, math.log(s.inner_lr)).requires_grad_() for k, v in p.items()
        }
        groups.append({"params": list(log_rates.values()), "lr": s.rate_lr})
    precond = None
    if s.precond:
        precond = torch.eye(ts.x.shape[-1]).requires_grad_()
        groups.append({"params": [precond], "lr": s.precond_lr})
    opt = torch.optim.Adam(groups)
    n_tasks, n_bars = ts.x.shape[:2]

    def task_meta_loss(p, rates, xa, ra, xe, re, sc):
        q = adapt(p, rates, xa, ra, sc, s.inner_steps)
        return loss(q, xe, re, sc)

    batched = torch.func.vmap(task_meta_loss, in_dims=(None, None, 0, 0, 0, 0, 0))
    t0, it, hist = time.perf_counter(), 0, []
    while it < s.iterations and time.perf_counter() - t0 < s.time_limit:
        idx = rng.integers(n_tasks, size=s.meta_batch)
        cuts = rng.integers(s.adapt_bars, n_bars - s.eval_bars + 1, size=s.meta_batch)
        xa, ra = _windows(ts, idx, cuts, -s.adapt_bars, s.adapt_bars)
        xe, re = _windows(ts, idx, cuts, 0, s.eval_bars)
        sc = ts.scale[torch.as_tensor(idx)]
        rates = {k: _rate(v, s) for k, v in log_rates.items()} if s.meta_sgd else s.inner_lr
        if precond is not None:
            rates = {**rates, "w@M": precond}
        meta = batched(p, rates, xa, ra, xe, re, sc).mean()
        opt.zero_grad()
        meta.backward()
        opt.step()
        hist.append(float(meta.detach()))
        it += 1
        if s.log_every and it % s.log_every == 0:
            print(f"it {it} meta-loss {np.mean(hist[-s.log_every :]):+.4f}", flush=True)
    info = {
        "iterations": it,
        "seconds": time.perf_counter() - t0,
        "final_loss": float(np.mean(hist[-50:])),
    }
    detach = lambda d: {k: v.detach() for k, v in d.items()}  # noqa: E731
    rates = {k: _rate(v.detach(), s) for k, v in log_rates.items()} if s.meta_sgd else s.inner_lr
    if precond is not None:
        rates = {**rates, "w@M": precond.detach()}
    return detach(p), rates, info


def pretrain(ts: TaskSet, s: Settings) -> Params:
    """Multi-task start: Adam on the average loss, no adaptation (the 'pretrained' row)."""
    rng = np.random.default_rng(s.seed)
    p = init_params(s, ts.x.shape[-1])
    opt = torch.optim.Adam(list(p.values()), lr=s.lr)
    n_tasks, n_bars = ts.x.shape[:2]
    for _ in range(s.iterations):
        idx = rng.integers(n_tasks, size=s.meta_batch)
        cuts = rng.integers(0, n_bars - s.eval_bars + 1, size=s.meta_batch)
        xe, re = _windows(ts, idx, cuts, 0, s.eval_bars)
        sc = ts.scale[torch.as_tensor(idx)]
        lv = torch.func.vmap(loss, in_dims=(None, 0, 0, 0))(p, xe, re, sc).mean()
        opt.zero_grad()
        lv.backward()
        opt.step()
    return {k: v.detach() for k, v in p.items()}


def adapt_eval_tasks(
    p: Params, rates: Params | float, ts: TaskSet, adapt_bars: int, steps: int
) -> Params:
    """Adapted parameters [T, ...] of every evaluation task (on its last ``adapt_bars``
    bars before the test period)."""
    a0 = ts.test_start - adapt_bars
    xa, ra = ts.x[:, a0 : ts.test_start], ts.nxt[:, a0 : ts.test_start]
    fn = lambda xa, ra, sc: adapt(p, rates, xa, ra, sc, steps)  # noqa: E731
    return {k: v.detach() for k, v in torch.func.vmap(fn)(xa, ra, ts.scale).items()}


def test_positions(q: Params, ts: TaskSet, *, mode: bool) -> np.ndarray:
    """Positions [T, N] of adapted parameters q [T, ...] over each task's bars."""
    fn = mode_position if mode else expected_position
    with torch.no_grad():
        return torch.func.vmap(fn)(q, ts.x).numpy()
