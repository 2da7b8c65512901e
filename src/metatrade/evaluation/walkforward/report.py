"""The walk-forward report: one self-contained HTML page (figures embedded as base64 PNG,
no script, no external resource), plus CSV, JSON, a text table and the PNGs.
Every file is written atomically. A row the ruin rule stopped (equity at or below
``ruin_fraction`` of the capital: it traded no more) is flagged ``[RUIN]`` in every table,
with a note saying on which task and day: its metrics are not those of a full record."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from metatrade.evaluation.baselines import SELECTED_LABEL
from metatrade.evaluation.walkforward.figures import FIGURES
from metatrade.io import atomic_write_bytes, atomic_write_text, json_safe

if TYPE_CHECKING:
    from metatrade.evaluation.walkforward.evaluate import Scope, WalkForwardResult

COLUMNS = (  # (key, header, format)
    ("total_return", "total return %", "{:+.2f}", 100),
    ("annual_return", "annual return %", "{:+.1f}", 100),
    ("sharpe", "Sharpe (ann.)", "{:+.2f}", 1),
    ("psr", "PSR", "{:.3f}", 1),
    ("dsr", "DSR", "{:.3f}", 1),
    ("max_drawdown", "max DD %", "{:.2f}", 100),
    ("turnover", "turnover /yr", "{:.0f}", 1),
    ("trades", "trades", "{:.0f}", 1),
    ("hit_rate", "hit rate", "{:.2f}", 1),
    ("breakeven_bps", "break-even bps/side", "{:+.2f}", 1),
)


def _fmt(value: float, fmt: str, scale: float) -> str:
    return "n/a" if value is None or value != value else fmt.format(value * scale)


RUIN_FLAG = " [RUIN]"


def ruined(res: WalkForwardResult, scope: str = "pooled") -> dict[str, list[str]]:
    """Rows of ``scope`` (a task, or every task when pooled) that the ruin rule stopped:
    label -> ["<task> on <day>", ...]."""
    out: dict[str, list[str]] = {}
    for t in res.tasks:
        if scope not in ("pooled", t.task):
            continue
        for label, rec in t.records.items():
            for j in rec.ruin_at:
                day = pd.Timestamp(int(t.timestamps[min(j, len(t.timestamps) - 1)]), tz="UTC")
                out.setdefault(label, []).append(f"{t.task} on {day.date()}")
    return out


def ruin_note(res: WalkForwardResult, scope: str = "pooled") -> str:
    """The line under a table that says which rows the ruin rule stopped ("" if none)."""
    stopped = ruined(res, scope)
    if not stopped:
        return ""
    fraction = res.config.get("ruin_fraction")
    level = f"{100 * fraction:g}% of the capital" if fraction is not None else "the ruin level"
    rows = "; ".join(f"{label} ({', '.join(where)})" for label, where in stopped.items())
    return (
        f"{RUIN_FLAG.strip()} stopped by the ruin rule (equity fell to {level}; no trading "
        f"after): {rows}"
    )


def table_rows(res: WalkForwardResult, scope: Scope) -> list[list[str]]:
    """Cells of a scope's table: row (flagged when the ruin rule stopped it), metrics,
    Sharpe interval."""
    conf = int(round(100 * res.config["confidence"]))
    stopped = ruined(res, scope.name)
    out = [["row", *[h for _, h, _, _ in COLUMNS], f"Sharpe {conf}% CI"]]
    for label in res.labels:
        m = scope.metrics[label]
        ci = scope.cis[label]["sharpe"]
        name = label + (RUIN_FLAG if label in stopped else "")
        out.append(
            [
                name,
                *[_fmt(m[k], f, s) for k, _, f, s in COLUMNS],
                f"[{ci.low:+.2f}, {ci.high:+.2f}]",
            ]
        )
    return out


def period_line(res: WalkForwardResult, scope: str = "pooled") -> str:
    """Which split the walk scored and how many times its test period has been looked at
    (the command's ``period``, else the scope's trial evidence)."""
    if res.period is not None:
        return res.period.describe()
    p = res.scopes[scope].trials
    return f"scored on the {p['split']} split; looks at its test period: {p['test_looks']:.0f}"


def text_table(res: WalkForwardResult, scope: str = "pooled") -> str:
    """A plain fixed-width table of one scope (for the terminal): the split scored and the
    looks at the test period above it, the ruin note and the bootstrap warning below."""
    cells = table_rows(res, res.scopes[scope])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = [period_line(res, scope)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    note = ruin_note(res, scope)
    if note:
        lines.append(note)
    plan = res.scopes[scope].bootstrap
    if plan is not None and plan.warning:
        lines.append(f"WARNING: {plan.warning}")
    return "\n".join(lines)


def difference_lines(res: WalkForwardResult, against: str = SELECTED_LABEL) -> list[str]:
    """One line per pooled paired difference "<start> - ``against``" (for the terminal)."""
    out = []
    for name, d in res.pooled.differences.items():
        if name.endswith(f" - {against}"):
            s, r = d["sharpe"], d["annual_return"]
            sharpe = f"Sharpe {s.estimate:+.2f} [{s.low:+.2f}, {s.high:+.2f}]"
            annual = f"{100 * r.estimate:+.1f} % [{100 * r.low:+.1f}, {100 * r.high:+.1f}]"
            out.append(f"paired (pooled) {name}: {sharpe}, annual return {annual}")
    return out


def _html_table(cells: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells[1:]
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def evidence_lines(scope: Scope) -> list[str]:
    """How sceptical to be: the DSR's trials (from the registry), PBO, looks at the test
    period, and the bootstrap's blocks (with the warning when they are too few)."""
    p = scope.trials
    outside = (
        f" x {p['configurations']:.0f} configurations tried outside it"
        if p["configurations"] > 1
        else ""
    )
    partitions = (
        f", S = {p['pbo_partitions']:.0f}" if "pbo_partitions" in p else " (needs 2 trials, 4 days)"
    )
    lines = [
        f"DSR trials: N = {p['n_trials']:.0f} ({p['n_registry']:.0f} trial(s) on this data set "
        f"in {p['source']}{outside}); per-day Sharpe std of the trials "
        f"{p['trial_sharpe_std_daily']:.4f}; SR0 = {p['sr0_daily']:.4f} per day",
        f"PBO (CSCV, Bailey et al. 2017): {p['pbo']:.2f} over {p['pbo_trials']:.0f} trials on "
        f"{p['pbo_periods']:.0f} common days of the {p['split']} split{partitions}",
        f"looks at the test period of this data set (recorded): {p['test_looks']:.0f}",
    ]
    plan = scope.bootstrap
    if plan is not None:
        lines.append(
            f"intervals: stationary bootstrap over whole days, mean block {plan.block:.1f} days, "
            f"{plan.blocks:.1f} independent blocks over {plan.days} days"
        )
        if plan.warning:
            lines.append(f"WARNING: {plan.warning}")
    return lines


def _summary(res: WalkForwardResult) -> str:
    c = res.config
    f = c["folds"]
    mode = "carry (live account)" if c["carry"] else "flatten at fold ends (fixed capital)"
    items = [
        period_line(res),
        f"held-out tasks: {', '.join(t.task for t in res.tasks)}",
        f"folds of {f['fold_bars']} {f['unit']}, adaptation window {f['adapt_bars']} {f['unit']}, "
        f"embargo {f['embargo']} {f['unit']}, start: {c['start']}",
        f"adaptation: {c['adapter']}, k = {res.steps} inner step(s) before every fold",
        *_classical_line(c),
        f"account: {mode}; actions: {'mode (deterministic)' if c['deterministic'] else 'sampled'}",
        f"normalisation: {f['normalisation']}"
        + (
            " (statistics of the history ending where the "
            "adaptation window ends; nothing from the fold)"
            if f["normalisation"] == "expanding"
            else ""
        ),
        *evidence_lines(res.pooled),
        "markets (calendar, time zone, currency, cost preset): "
        + "; ".join(f"{t}: {m}" for t, m in c["markets"].items()),
        f"capital {c['initial_capital']:,.0f} (in each task's currency)",
        f"intervals: {res.config['bootstrap_samples']} resamples, paired across rows",
    ]
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _classical_line(c: dict[str, Any]) -> list[str]:
    """The summary's line on the classical rows (none without them)."""
    if not c.get("classical"):
        return []
    s = c["classical_settings"]
    return [
        f"classical rows re-fitted before every fold on the rows the starts adapt on: "
        f"AR({s['ar_order']}), momentum / reversal h in {list(s['horizons'])}, time of day "
        f"in {s['buckets']} buckets; classical-selected = best in-sample ledger P&L"
    ]


def _differences(res: WalkForwardResult) -> str:
    cells = [["difference (pooled)", "Sharpe", "CI", "annual return %", "CI"]]
    for name, d in res.pooled.differences.items():
        s, r = d["sharpe"], d["annual_return"]
        cells.append(
            [
                name,
                f"{s.estimate:+.2f}",
                f"[{s.low:+.2f}, {s.high:+.2f}]",
                f"{100 * r.estimate:+.1f}",
                f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}]",
            ]
        )
    return _html_table(cells, "diff")


_CSS = (
    "body{font-family:sans-serif;margin:24px;max-width:1400px}"
    "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;"
    "padding:3px 7px;text-align:right;font-size:13px}th{background:#eee}"
    "td:first-child{text-align:left}img{max-width:100%}"
)


def _note(res: WalkForwardResult, scope: str) -> str:
    note = ruin_note(res, scope)
    return f'<p class="ruin"><b>{html.escape(note)}</b></p>' if note else ""


def render_html(res: WalkForwardResult, images: dict[str, bytes]) -> str:
    """The page: summary, pooled table, paired differences, figures, per-task tables."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>metatrade walk-forward report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Walk-forward meta-test</h1>",
        _summary(res),
        "<h2>Pooled (equal-weight portfolio of the held-out tasks)</h2>",
        _html_table(table_rows(res, res.pooled), "metrics"),
        _note(res, "pooled"),
        "<h2>Paired differences</h2>",
        _differences(res),
    ]
    for key, (title, _) in FIGURES.items():
        data = base64.b64encode(images[key]).decode("ascii")
        parts += [
            f"<h2>{html.escape(title)}</h2>",
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">',
        ]
    for t in res.tasks:
        parts += [
            f"<h2>Task {html.escape(t.task)}</h2>",
            _html_table(table_rows(res, res.scopes[t.task]), "metrics"),
            _note(res, t.task),
        ]
    parts.append("<p>Definitions: docs/evaluation.md (walk-forward protocol).</p></body></html>")
    return "\n".join(parts)


def to_json(res: WalkForwardResult) -> dict[str, Any]:
    """Everything measured, JSON-ready."""
    scopes = {}
    for name, s in res.scopes.items():
        scopes[name] = {
            "metrics": s.metrics,
            "intervals": {k: {st: ci.as_dict() for st, ci in v.items()} for k, v in s.cis.items()},
            "differences": {
                k: {st: ci.as_dict() for st, ci in v.items()} for k, v in s.differences.items()
            },
            "trials": s.trials,
            "bootstrap": s.bootstrap.as_dict() if s.bootstrap is not None else None,
            "cost_sweep_total_return": s.sweep,
            "daily_returns": {k: s.daily[k].tolist() for k in s.daily},
            "days": [str(d.date()) for d in s.daily.index],
        }
    tasks = {
        t.task: {
            "folds": [{"adapt": f.adapt, "norm": f.norm, "trade": f.trade} for f in t.folds],
            "fold_returns": {k: r.fold_returns.tolist() for k, r in t.records.items()},
            "first_decisions": {k: r.first_action for k, r in t.records.items() if r.first_action},
            "classical_fits": t.classical_fits,
            "stopped_by_ruin": {k: r.ruin_at for k, r in t.records.items() if r.ruin_at},
            "seconds": {"adapt": t.adapt_seconds, "trade": t.trade_seconds},
        }
        for t in res.tasks
    }
    period = None if res.period is None else res.period.as_dict()
    return json_safe(
        {
            "config": res.config,
            "rows": res.labels,
            "steps": res.steps,
            "period": period,
            "scopes": scopes,
            "tasks": tasks,
            "seconds": res.seconds,
        }
    )


def save_report(res: WalkForwardResult, out_dir: str | Path) -> dict[str, Path]:
    """Write walkforward.{html,csv,json,txt} and walkforward_<figure>.png into ``out_dir``."""
    out = Path(out_dir)
    images = {key: fn(res) for key, (_, fn) in FIGURES.items()}
    files = {}
    for key, data in images.items():
        files[f"png_{key}"] = atomic_write_bytes(out / f"walkforward_{key}.png", data)
    records = res.rows()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(json_safe(records))
    files["csv"] = atomic_write_text(out / "walkforward.csv", buf.getvalue())
    files["json"] = atomic_write_text(
        out / "walkforward.json", json.dumps(to_json(res), indent=1) + "\n"
    )
    files["txt"] = atomic_write_text(out / "walkforward.txt", text_table(res) + "\n")
    files["html"] = atomic_write_text(out / "walkforward.html", render_html(res, images))
    return files
