"""Run one setting of the research prototype on several seeds and summarise (means over
seeds of the per-kind oracle fractions; every seed's paired CI of MAML minus
classical-selected). Arguments after ``--`` go to ``experiments.regimes.run``.

    python -m experiments.regimes.seeds --seeds 0 1 2 --tag B -- --group-gain 0.01
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tag", default="")
    ap.add_argument("--summary", default="experiments/regimes/summary.jsonl")
    args, rest = ap.parse_known_args()
    rest = [r for r in rest if r != "--"]
    runs = []
    for s in args.seeds:
        cmd = [sys.executable, "-m", "experiments.regimes.run", "--seed", str(s), *rest]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    rows = ("maml_mode", "maml_sampled", "zero_step_mode", "selected", "ceiling")
    summ = {"tag": args.tag, "argv": rest, "seeds": args.seeds}
    for r in rows:
        kinds = runs[0]["by_kind"][r]
        summ[r] = {k: round(float(np.mean([x["by_kind"][r][k] for x in runs])), 3) for k in kinds}
        summ[r]["mean"] = round(float(np.mean([x["mean_over_kinds"][r] for x in runs])), 3)
    best = {}
    for k in runs[0]["by_kind"]["oracle"]:
        best[k] = round(
            float(
                np.mean(
                    [
                        max(x["by_kind"][c][k] for c in ("plugin", "momentum", "reversal", "tod"))
                        for x in runs
                    ]
                )
            ),
            3,
        )
    summ["best_single_classical"] = best
    summ["maml_minus_best_classical"] = {k: round(summ["maml_mode"][k] - best[k], 3) for k in best}
    summ["ci_maml_minus_selected_bp"] = [x["maml_minus_selected_bp"] for x in runs]
    summ["per_seed_mean"] = [x["mean_over_kinds"]["maml_mode"] for x in runs]
    summ["train_seconds"] = [round(x["train_info"]["seconds"], 1) for x in runs]
    print(json.dumps(summ))
    with open(args.summary, "a") as f:
        f.write(json.dumps(summ) + "\n")


if __name__ == "__main__":
    main()
