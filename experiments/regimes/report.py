"""Markdown tables of the research log: every run of ``experiments.regimes.run`` (from
``results.jsonl``) and every multi-seed summary (``summary.jsonl``).

    python -m experiments.regimes.report
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
DEFAULTS = {
    "policy": "linear",
    "hidden": 32,
    "inner_lr": 30.0,
    "no_meta_sgd": False,
    "steps": 1,
    "iterations": 1500,
    "lr": 0.003,
    "rate_lr": 0.02,
    "meta_batch": 16,
    "eval_bars": 512,
    "group_gain": 0.0,
    "gain": 0.0,
    "raw_rates": False,
    "precond": False,
    "fixed_start": False,
    "zero_init": False,
    "train_weights": "",
    "gain_groups": "named",
}


def _esc(text: str) -> str:
    return text.replace("|", "\\|")  # a literal | inside a markdown table cell


def _changed(args: dict) -> str:
    out = [f"{k}={v}" for k, v in args.items() if k in DEFAULTS and v != DEFAULTS[k]]
    return " ".join(out) or "-"


def runs_table() -> str:
    lines = [
        "| # | features | settings (not default) | train/eval tasks | seed | MAML k=1 mean | ar | seas | vol_ar | markov | gap | zero-step | selected | MAML - selected, bp/window [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, line in enumerate((HERE / "results.jsonl").read_text().splitlines(), 1):
        d = json.loads(line)
        a, k, m = d["args"], d["by_kind"]["maml_mode"], d["mean_over_kinds"]
        ci = d["maml_minus_selected_bp"]
        lines.append(
            f"| {i} | `{_esc(a['features'])}` | {_changed(a)} | {a.get('train_tasks', 120)}/"
            f"{a.get('eval_tasks', 300)} | {a['seed']} | {m['maml_mode']:.3f} | {k['ar']:.2f} | "
            f"{k['seasonal']:.2f} | {k['vol_ar']:.2f} | {k['markov']:.2f} | {k['gap']:.2f} | "
            f"{m['zero_step_mode']:.3f} | {m['selected']:.3f} | {ci[0]:+.1f} [{ci[1]:+.1f}, {ci[2]:+.1f}] |"
        )
    return "\n".join(lines)


def summary_table() -> str:
    lines = [
        "| tag | settings | MAML k=1 mean (per seed) | ar | seas | vol_ar | markov | gap | worst kind vs best single classical | CI lower bounds, bp |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    path = HERE / "summary.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        d = json.loads(line)
        m, gaps = d["maml_mode"], d["maml_minus_best_classical"]
        worst = min(gaps, key=gaps.get)
        seeds = " / ".join(f"{x:.3f}" for x in d["per_seed_mean"])
        lows = " / ".join(f"{c[1]:+.1f}" for c in d["ci_maml_minus_selected_bp"])
        lines.append(
            f"| {d['tag']} | `{_esc(' '.join(d['argv']))}` | {m['mean']:.3f} ({seeds}) | {m['ar']:.2f} | "
            f"{m['seasonal']:.2f} | {m['vol_ar']:.2f} | {m['markov']:.2f} | {m['gap']:.2f} | "
            f"{worst} {gaps[worst]:+.3f} | {lows} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(runs_table())
    print()
    print(summary_table())
