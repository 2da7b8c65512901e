"""Issue 19's research prototype: which start + one inner step beats classical-selected on
mixed-kind regime tasks? One run = meta-train on training tasks (seed 1000 + S), score on
validation tasks (seed 5000 + S; ``--tasks test``: 2000 + S, only once the recipe is fixed).

    python -m experiments.regimes.run --features lags:8,tod:6 --policy linear --seed 0

Prints per-kind oracle fractions of every row and the paired CI of MAML (k = 1, mode
actions) minus classical-selected, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from experiments.regimes import ceiling, classical, evaluate, meta
from experiments.regimes.features import group_of
from experiments.regimes.tasks import family
from metatrade.data.regime_config import RegimesConfig
from metatrade.data.regime_kinds import KINDS

SEED_BASE = {"train": 1000, "validation": 5000, "test": 2000}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="lags:8,tod:6")
    ap.add_argument("--policy", default="linear", choices=("linear", "mlp", "skip"))
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--inner-lr", type=float, default=30.0)
    ap.add_argument("--no-meta-sgd", action="store_true")
    ap.add_argument("--steps", type=int, default=1, help="inner steps in training and test")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--rate-lr", type=float, default=0.02, help="Adam lr of log Meta-SGD rates")
    ap.add_argument("--meta-batch", type=int, default=16)
    ap.add_argument("--eval-bars", type=int, default=512)
    ap.add_argument("--group-gain", type=float, default=0.0, help="init of the group gain")
    ap.add_argument("--gain-groups", choices=("named", "column"), default="named")
    ap.add_argument("--gain", type=float, default=0.0, help="linear path: w (1 + gain w^2)")
    ap.add_argument("--raw-rates", action="store_true", help="Meta-SGD rates not in log space")
    ap.add_argument("--precond", action="store_true", help="learned full preconditioner (w)")
    ap.add_argument("--fixed-start", action="store_true", help="linear start fixed at 0")
    ap.add_argument("--zero-init", action="store_true")
    ap.add_argument("--train-weights", default="", help="e.g. seasonal=2: training-family weights")
    ap.add_argument("--train-tasks", type=int, default=480)
    ap.add_argument("--train-bars", type=int, default=3000)
    ap.add_argument("--tasks", choices=("validation", "test"), default="validation")
    ap.add_argument("--eval-tasks", type=int, default=600)
    ap.add_argument("--test-bars", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--log-every", type=int, default=0)
    ap.add_argument("--dump", default="", help="torch.save the start and rates here")
    ap.add_argument(
        "--log", default="experiments/regimes/results.jsonl", help="append the JSON here"
    )
    ap.add_argument("--pretrained", action="store_true", help="also the multi-task start")
    return ap.parse_args()


def load_tasks(args: argparse.Namespace) -> tuple[Any, Any]:
    """(training tasks, held-out tasks) of the run's seed and features."""
    weights = dict.fromkeys(KINDS, 1.0)
    for item in filter(None, args.train_weights.split(",")):
        k, _, v = item.partition("=")
        weights[k] = float(v)
    train = family(
        SEED_BASE["train"] + args.seed,
        args.train_tasks,
        args.features,
        n_bars=args.train_bars,
        config=RegimesConfig(weights=weights),
    )
    held = family(
        SEED_BASE[args.tasks] + args.seed,
        args.eval_tasks,
        args.features,
        n_bars=1024 + args.test_bars,
        test_bars=args.test_bars,
    )
    by_group: dict[str, list[int]] = {}
    for i, n in enumerate(held.names):  # column: one group per feature column (its lags)
        key = n.split("@")[0] if args.gain_groups == "column" else group_of(n)
        by_group.setdefault(key, []).append(i)
    meta.GROUPS[:] = list(by_group.values())
    return train, held


def settings(args: argparse.Namespace) -> meta.Settings:
    return meta.Settings(
        policy=args.policy,
        hidden=args.hidden,
        inner_lr=args.inner_lr,
        meta_sgd=not args.no_meta_sgd,
        inner_steps=args.steps,
        iterations=args.iterations,
        lr=args.lr,
        rate_lr=args.rate_lr,
        meta_batch=args.meta_batch,
        eval_bars=args.eval_bars,
        zero_init=args.zero_init,
        gain=args.gain,
        group_gain=args.group_gain,
        fixed_start=args.fixed_start,
        precond=args.precond,
        raw_rates=args.raw_rates,
        seed=args.seed,
        time_limit=args.time_limit,
        log_every=args.log_every,
    )


def maml_positions(p, rates, held, args: argparse.Namespace, train, s) -> dict[str, np.ndarray]:
    """Test positions of the MAML start (k = 0, k = steps: mode and sampled), of a plain
    step from zero and (``--pretrained``) of the multi-task start."""
    n = len(held.kinds)
    q1 = meta.adapt_eval_tasks(p, rates, held, 512, args.steps)
    pos = {
        "maml_k0_mode": meta.test_positions(
            {k: v.expand(n, *v.shape) for k, v in p.items()}, held, mode=True
        ),
        "maml_mode": meta.test_positions(q1, held, mode=True),
        "maml_sampled": meta.test_positions(q1, held, mode=False),
    }
    zero = {"w": torch.zeros(3, held.x.shape[-1]), "b": torch.zeros(3)}  # plain linear
    pos["zero_step_mode"] = meta.test_positions(
        meta.adapt_eval_tasks(zero, 1.0, held, 512, 1), held, mode=True
    )
    if args.pretrained:
        pre = meta.pretrain(train, s)
        pos["pretrained_k0"] = meta.test_positions(
            {k: v.expand(n, *v.shape) for k, v in pre.items()}, held, mode=True
        )
        qp = meta.adapt_eval_tasks(pre, args.inner_lr, held, 512, 1)
        pos["pretrained_k1"] = meta.test_positions(qp, held, mode=True)
    return pos


def reference_positions(held) -> dict[str, np.ndarray]:
    """The classical rules, classical-selected, the ceiling and the oracle."""
    a0, a1 = held.test_start - 512, held.test_start
    nxt = [held.nxt[i].numpy() for i in range(len(held.kinds))]
    fits = [classical.fit_positions(b, nxt[i], a0, a1) for i, b in enumerate(held.bars)]
    pos = {name: np.stack([f[name] for f in fits]) for name in (*classical.RULES, "selected")}
    pos["ceiling"] = np.stack(
        [
            ceiling.informed_positions(r, b, nxt[i], a0, a1)
            for i, (r, b) in enumerate(zip(held.rules, held.bars, strict=True))
        ]
    )
    pos["oracle"] = np.sign(held.expected)
    return pos


def score(pos: dict[str, np.ndarray], held) -> dict[str, Any]:
    """Fractions by kind of every row, paired CIs of MAML minus classical-selected, the
    per-kind gap to the best single classical rule, and the approximate default costs."""
    pnl = {k: evaluate.window_pnl(v, held) for k, v in pos.items()}
    net = {
        k: pnl[k] - evaluate.window_costs(pos[k], held) for k in ("maml_mode", "selected", "oracle")
    }
    summ = evaluate.summarise(pnl, held)
    best = {
        k: max(summ["by_kind"][r][k] for r in classical.RULES) for k in summ["by_kind"]["oracle"]
    }
    return {
        "mean_over_kinds": summ["mean_over_kinds"],
        "by_kind": summ["by_kind"],
        "noise_pnl_bps": summ["noise_pnl_bps"],
        "maml_minus_selected_bp": evaluate.paired_ci(pnl["maml_mode"], pnl["selected"], held),
        "maml_sampled_minus_selected_bp": evaluate.paired_ci(
            pnl["maml_sampled"], pnl["selected"], held
        ),
        "maml_minus_best_classical_by_kind": {
            k: round(summ["by_kind"]["maml_mode"][k] - best[k], 3) for k in best
        },
        "with_default_costs_bp": {k: round(float(v.mean() * 1e4), 2) for k, v in net.items()},
        "with_default_costs_maml_minus_selected_bp": evaluate.paired_ci(
            net["maml_mode"], net["selected"], held
        ),
    }


def print_scores(out: dict[str, Any], held, rates) -> None:
    for name, fr in out["by_kind"].items():
        print(
            f"{name:16s} mean {out['mean_over_kinds'][name]:+.3f} "
            + " ".join(f"{k} {v:+.2f}" for k, v in fr.items())
            + f" noise {out['noise_pnl_bps'].get(name, 0):+.2f}bp"
        )
    print(
        f"MAML mode - selected (bp/window): {out['maml_minus_selected_bp']}; "
        f"sampled - selected: {out['maml_sampled_minus_selected_bp']}"
    )
    print(
        "MAML mode minus best single classical rule, by kind:",
        out["maml_minus_best_classical_by_kind"],
    )
    print("with default costs (approx.), bp/window:", out["with_default_costs_bp"])
    if isinstance(rates, dict) and "w" in rates:
        eff = (rates["w"][2] + rates["w"][0]).numpy() / 2  # long-minus-short rate per feature
        print(
            "rates (long+short)/2 by feature:",
            " ".join(f"{n}:{v:.0f}" for n, v in zip(held.names, eff, strict=True)),
        )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train, held = load_tasks(args)
    t_data = time.perf_counter() - t0
    s = settings(args)
    p, rates, info = meta.meta_train(train, s)
    if args.dump:
        torch.save({"p": p, "rates": rates, "args": vars(args)}, args.dump)
    pos = maml_positions(p, rates, held, args, train, s) | reference_positions(held)
    scores = score(pos, held)
    print(f"features {args.features} ({len(held.names)}), policy {args.policy}, {info}")
    print_scores(scores, held, rates)
    out = {
        "args": vars(args),
        "train_info": info,
        "sec_data": round(t_data, 1),
        "sec_total": round(time.perf_counter() - t0, 1),
        **scores,
    }
    if isinstance(rates, dict):
        out["rates"] = {
            k: [round(float(v.min()), 2), round(float(v.mean()), 2), round(float(v.max()), 2)]
            for k, v in rates.items()
            if k != "w@M"
        }
    line = json.dumps(out)
    print(line)
    if args.log:
        with open(args.log, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
