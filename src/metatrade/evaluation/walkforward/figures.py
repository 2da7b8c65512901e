"""Figures of the walk-forward report (matplotlib ``Figure`` + Agg canvas, never pyplot):
stitched equity against buy-and-hold, drawdowns, per-fold returns, cost sweep and the
adaptation curve. Each returns PNG bytes (the HTML embeds them; ``save`` writes them)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metatrade.evaluation.baselines import SELECTED_LABEL
from metatrade.evaluation.metrics import drawdown_series

if TYPE_CHECKING:
    from metatrade.evaluation.walkforward.evaluate import WalkForwardResult

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _style(res: WalkForwardResult, label: str) -> dict:
    """Re-adapted rows solid, frozen (k = 0) dashed, in the start's colour; references grey."""
    if label == "buy-and-hold":
        return {"color": "black", "lw": 1.6}
    if label == "flat":
        return {"color": "grey", "lw": 1.0, "ls": ":"}
    if "@k" not in label:  # a classical row
        return {"color": "tab:olive", "lw": 1.4, "ls": "-."}
    start, _, k = label.partition("@k")
    color = _COLORS[res.starts.index(start) % len(_COLORS)]
    frozen = int(k) == 0 and res.steps > 0
    return {"color": color, "lw": 1.0 if frozen else 1.6, "ls": "--" if frozen else "-"}


def shown_rows(res: WalkForwardResult) -> list[str]:
    """Rows drawn in curves: each start re-adapted (k = steps) and frozen, classical-selected
    and the references (the other classical rows are in the tables)."""
    keep = {f"{s}@k{k}" for s in res.starts for k in {0, res.steps}}
    keep |= {SELECTED_LABEL, "buy-and-hold", "flat"}
    return [r for r in res.labels if r in keep]


def _equity(res: WalkForwardResult, scope: str) -> dict[str, np.ndarray]:
    daily = res.scopes[scope].daily
    return {
        k: np.concatenate([[1.0], np.cumprod(1.0 + daily[k].fillna(0).to_numpy())])
        for k in shown_rows(res)
    }


def equity_figure(res: WalkForwardResult) -> bytes:
    """Stitched equity (growth of 1, daily) per task and pooled."""
    scopes = list(res.scopes)
    cols = min(3, len(scopes))
    nrows = -(-len(scopes) // cols)
    fig = Figure(figsize=(5.2 * cols, 3.4 * nrows))
    for i, scope in enumerate(scopes):
        ax = fig.add_subplot(nrows, cols, i + 1)
        days = res.scopes[scope].daily.index
        x = np.arange(len(days) + 1)
        for label, eq in _equity(res, scope).items():
            ax.plot(x, eq, label=label, **_style(res, label))
        ax.set_title(scope, fontsize=10)
        ticks = np.unique(np.linspace(1, len(days), min(4, len(days))).astype(int))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(days[t - 1].date()) for t in ticks], fontsize=7)
        ax.set_ylabel("equity / C0", fontsize=8)
        ax.grid(alpha=0.3)
    fig.axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle("Stitched out-of-sample equity (walk-forward), vs buy-and-hold")
    fig.tight_layout()
    return _png(fig)


def drawdown_figure(res: WalkForwardResult) -> bytes:
    """Drawdown (% below the running peak) of the pooled stitched equity per row."""
    fig = Figure(figsize=(10, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for label, eq in _equity(res, "pooled").items():
        ax.plot(-100 * drawdown_series(eq)[0], label=label, **_style(res, label))
    ax.set_xlabel("trading day")
    ax.set_ylabel("drawdown %")
    ax.set_title("Pooled drawdowns")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def fold_figure(res: WalkForwardResult) -> bytes:
    """Return of every fold (P&L over the fold's starting equity), per task."""
    n = len(res.tasks)
    cols = min(3, n)
    nrows = -(-n // cols)
    fig = Figure(figsize=(5.2 * cols, 3.0 * nrows))
    for i, t in enumerate(res.tasks):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for label in shown_rows(res):
            r = t.records[label].fold_returns
            ax.plot(np.arange(len(r)), 100 * r, marker="o", ms=3, label=label, **_style(res, label))
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(t.task, fontsize=10)
        ax.set_xlabel("fold", fontsize=8)
        ax.set_ylabel("fold return %", fontsize=8)
    fig.axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def cost_figure(res: WalkForwardResult) -> bytes:
    """Pooled total return against the per-side proportional cost (trades held fixed)."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    grid = np.asarray(res.config["cost_grid"])
    for label in shown_rows(res):
        ax.plot(
            grid,
            100 * np.asarray(res.pooled.sweep[label]),
            marker="o",
            ms=3,
            label=label,
            **_style(res, label),
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("proportional cost per order side (bps)")
    ax.set_ylabel("pooled total return %")
    ax.set_title("Cost sweep (break-even where a line crosses 0)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def adaptation_figure(res: WalkForwardResult) -> bytes:
    """Pooled annualised Sharpe against k, per start, with bootstrap intervals."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ks = np.arange(res.steps + 1)
    for i, s in enumerate(res.starts):
        cis = [res.pooled.cis[f"{s}@k{k}"]["sharpe"] for k in ks]
        color = _COLORS[i % len(_COLORS)]
        ax.plot(ks, [c.estimate for c in cis], marker="o", color=color, label=s)
        ax.fill_between(ks, [c.low for c in cis], [c.high for c in cis], color=color, alpha=0.15)
    colors = {"buy-and-hold": "black", "flat": "grey", SELECTED_LABEL: "tab:olive"}
    for ref, color in colors.items():
        if ref in res.labels:
            v = res.pooled.metrics[ref]["sharpe"]
            ax.axhline(0.0 if not np.isfinite(v) else v, ls="--", label=ref, color=color)
    ax.set_xticks(ks)
    ax.set_xlabel("inner steps k before each fold (0 = frozen)")
    ax.set_ylabel("pooled annualised Sharpe")
    ax.set_title("Adaptation curve (walk-forward)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


FIGURES = {
    "equity": ("Stitched equity curves", equity_figure),
    "drawdown": ("Drawdowns", drawdown_figure),
    "folds": ("Per-fold returns", fold_figure),
    "costs": ("Cost sweep", cost_figure),
    "adaptation": ("Adaptation curve", adaptation_figure),
}
