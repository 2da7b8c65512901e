"""Regime-family benchmark (issue 19): does a meta-learned start, after one exact step, beat
the classical adaptive rules a desk uses, on tasks of several kinds of structure?

It drives the product path and nothing else: ``configs/regimes.yaml`` -> ``metatrade
meta-train --seeds`` -> ``metatrade evaluate --seeds`` (the CLI's own functions, in this
process), then reads what evaluate wrote in each run (``eval/evaluation.json``: the paired
differences against classical-selected; ``eval/evaluation_kinds.json``: the ledger oracle
fraction of every row by kind) and checks the issue's acceptance per seed:

* MAML k = 1 minus classical-selected, paired 95% CI (day bootstrap) above zero;
* MAML k = 1 at least 0.7 of the ledger oracle, mean over the kinds whose oracle trades (the
  markov oracle knows the hidden state; noise tasks have a flat oracle and are reported in
  absolute return);
* on each kind, MAML's fraction at most 0.1 below the best single classical rule there.

Without ``--final`` the held-out tasks' validation split is scored (where settings are
chosen); ``--final`` scores their test split (a recorded look in the run's registry).
Costs: the config's ``zero`` preset (the issue's regime tasks have none).

Usage:
    python benchmarks/synthetic_regimes.py --quick     # < 45 s smoke run (numbers not meaningful)
    python benchmarks/synthetic_regimes.py --out runs/regimes            # validation, seeds 0 1 2
    python benchmarks/synthetic_regimes.py --out runs/regimes --final    # the test figures
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "regimes.yaml"
MAML, SELECTED = "MAML@k1", "classical-selected"
SINGLE = ("AR(1)", "momentum", "reversal", "time-of-day")
"""the single classical rules' row labels (the AR order is the config's: AR(p) matched below)"""

# --quick: a smoke run of the same path (small task sets, few iterations)
QUICK = {
    "data": {"num_synthetic_tasks": 12, "synthetic_eval": {"tasks": 12, "bars": 1400}},
    "meta": {"num_meta_iterations": 5, "meta_batch_size": 4},
    "evaluation": {"test_episodes": 8},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merge(base[key], value) if both else value
    return out


def _cli(*args: str) -> None:
    """One ``metatrade`` command, run in this process by the CLI's own app."""
    import typer

    from metatrade.cli import app

    try:
        typer.main.get_command(app).main([str(a) for a in args], standalone_mode=False)
    except SystemExit as stop:  # the CLI's "error: ..." exits 2
        if stop.code:
            raise SystemExit(f"metatrade {' '.join(map(str, args))}: exit {stop.code}") from None


def _single_rules(rows: dict[str, Any]) -> list[str]:
    return [r for r in rows if r in SINGLE or (r.startswith("AR(") and r != SELECTED)]


def seed_figures(run: Path) -> dict[str, Any]:
    """The acceptance figures of one seed's run from what ``evaluate`` wrote."""
    doc = json.loads((run / "eval" / "evaluation.json").read_text())
    kinds = json.loads((run / "eval" / "evaluation_kinds.json").read_text())
    rows = kinds["rows"]
    diff = doc["paired_differences"][f"{MAML} - {SELECTED}"]
    maml = rows[MAML]
    per_kind, margin = {}, {}
    for kind, ci in maml["fractions"].items():
        best = max(_single_rules(rows), key=lambda r: rows[r]["fractions"][kind]["estimate"])
        best_value = rows[best]["fractions"][kind]["estimate"]
        per_kind[kind] = round(ci["estimate"], 4)
        margin[kind] = {"best_single": best, "best": round(best_value, 4)}
        margin[kind]["maml_minus_best"] = round(ci["estimate"] - best_value, 4)
    worst = min(m["maml_minus_best"] for m in margin.values())
    return {
        "split": (doc.get("period") or {}).get("split"),
        "maml_k1_mean_fraction": round(maml["mean_fraction"], 4),
        "maml_k1_by_kind": per_kind,
        "selected_mean_fraction": round(rows[SELECTED]["mean_fraction"], 4),
        "mean_fraction_by_row": {r: round(v["mean_fraction"], 4) for r, v in rows.items()},
        "maml_minus_selected_pct": {
            k: round(100 * diff[k], 4) for k in ("estimate", "low", "high")
        },
        "vs_best_single": margin,
        "noise_returns_pct": {k: round(100 * v, 4) for k, v in maml["flat_returns"].items()},
        "met": {
            "ci_above_zero": diff["low"] > 0,
            "fraction_0.7": maml["mean_fraction"] >= 0.7,
            "each_kind_within_0.1": worst >= -0.1,
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="< 45 s smoke run, seed 0")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=None, help="run base (default: a temp folder)")
    ap.add_argument("--final", action="store_true", help="score the test split (a look)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate existing runs only")
    ap.add_argument(
        "--skip-evaluate", action="store_true", help="read what evaluate wrote in each run"
    )
    args = ap.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    tmp = tempfile.TemporaryDirectory(prefix="regimes-bench-")
    base = args.out or Path(tmp.name) / "regimes"
    config = args.config
    if args.quick:
        config = Path(tmp.name) / "regimes-quick.yaml"
        full = yaml.safe_load(args.config.read_text())
        config.write_text(yaml.safe_dump(_merge(full, QUICK)))
    seed_args = ["--seeds", " ".join(map(str, seeds))]
    t0 = time.perf_counter()
    if not args.skip_train:
        _cli("meta-train", "--config", config, "--out", base, "--no-progress", *seed_args)
    t1 = time.perf_counter()
    final = ["--final"] if args.final else []
    if not args.skip_evaluate:
        _cli("evaluate", "--checkpoint", base, *seed_args, *final, "--overwrite", "--no-progress")
    t2 = time.perf_counter()
    per_seed = {s: seed_figures(base.with_name(f"{base.name}-seed{s}")) for s in seeds}
    summary = {
        "benchmark": "synthetic_regimes",
        "quick": args.quick,
        "config": str(args.config),
        "split": sorted({str(f["split"]) for f in per_seed.values()}),
        "seeds": seeds,
        "meta_train_s": round(t1 - t0, 1),
        "evaluate_s": round(t2 - t1, 1),
        "per_seed": per_seed,
        "all_met_every_seed": all(all(f["met"].values()) for f in per_seed.values()),
    }
    tmp.cleanup()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
