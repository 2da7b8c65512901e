"""Exact versus sampled MAML on the demo's real tasks (issue 13): speed, and held-out Finnifty.

The demo's tasks and sizes (configs/sampled.yaml, the demo's settings before it moved to the
exact estimator: Nifty and Bank_Nifty at 2..60 minutes to
meta-train on, every Finnifty task held out, lookback 32, 128-bar windows, 8 tasks per
meta-iteration, the embedded data). ``configs/exact.yaml`` is the same run with
``meta.estimator: exact`` and ``env.observation: position``.

1. Speed: seconds per meta-iteration of the two learners, measured in one run with their
   iterations interleaved (sampled, exact, sampled, ...) so machine load hits both alike;
   the median after warm-up. Target: the exact one >= 3x faster.
2. Full mode: for each estimator, three starts adapted by that estimator's inner loop on
   each held-out Finnifty task and measured in the ledger (``MetaTestProtocol``: random test
   windows of the test split, and whole-split backtests), at default costs and stressed
   (+2 bps per order side, adapted and measured at those costs):
   * sampled: MAML (the demo's settings), multi-task PPO with the same env steps, random;
   * exact: MAML-exact, pretrained-exact (``pretrain_on_objective``, the same gradient
     evaluations), random. Buy-and-hold and flat beside them.
   The classical adaptive rows (configs/exact.yaml's ``evaluation.baselines``: plug-in AR,
   momentum, reversal, time of day, classical-selected) are fitted on the same adaptation
   rows and traded on the same windows.
   Goal (measured, not pass/fail): MAML-exact after one step not below flat at default costs
   and above random with a paired CI above zero.

Settings: configs/exact.yaml's, chosen on the held-out tasks' VALIDATION split only
(``--split validation`` runs this benchmark there; docs/exact.md).

Usage:
    python benchmarks/exact_trading.py --quick            # speed only (< 45 s)
    python benchmarks/exact_trading.py                    # speed + held-out table (~19 min under load)
    python benchmarks/exact_trading.py --split validation --exact-only   # choosing settings
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import yaml

from metatrade.evaluation.backtest import stressed_config
from metatrade.evaluation.protocol import (
    EvaluationResult,
    MetaTestProtocol,
    Start,
    module_params,
    random_start,
)
from metatrade.meta.learner import MetaLearner
from metatrade.meta.pretrain import gradient_evaluations_per_iteration, pretrain_on_objective
from metatrade.runtime import configure_cpu
from metatrade.training import build
from metatrade.training.config import RunConfig, apply_overrides, load_config
from metatrade.training.demo import meta_env_steps

KS = (0, 1, 2, 3)


def learners(cfg: RunConfig, loader: Any) -> tuple[MetaLearner, Any]:
    """A fresh MetaLearner for ``cfg`` (its policy initialised from run.seed), and the family."""
    family = build.make_family(cfg, loader)
    policy = build.make_policy_for(cfg, family)
    return MetaLearner(policy, family, build.make_meta_config(cfg)), family


def time_iterations(
    sampled: RunConfig, exact: RunConfig, loader: Any, *, iterations: int, warmup: int
) -> dict[str, Any]:
    """Median seconds per meta-iteration of each learner, iterations interleaved."""
    ls, _ = learners(sampled, loader)
    le, _ = learners(exact, loader)
    times: dict[str, list[float]] = {"sampled": [], "exact": []}
    for _ in range(warmup + iterations):
        for name, learner in (("sampled", ls), ("exact", le)):
            t0 = time.perf_counter()
            learner.step()
            times[name].append(time.perf_counter() - t0)
    s, e = (float(np.median(times[k][warmup:])) for k in ("sampled", "exact"))
    return {
        "sec_per_iter_exact": round(e, 4),
        "sec_per_iter_sampled": round(s, 4),
        "ratio": round(s / e, 2),
        "timed_iterations": iterations,
    }


def train_starts(cfg: RunConfig, loader: Any, *, iterations: int | None) -> dict[str, Start]:
    """MAML, its fair pretrained baseline (exact: the objective, same gradient evaluations;
    sampled: multi-task PPO, same env steps) and a random init, for one estimator."""
    learner, family = learners(cfg, loader)
    iters = iterations or cfg.meta.num_meta_iterations
    t0 = time.perf_counter()
    for _ in range(iters):
        learner.step()
    policy = learner.policy
    maml = {k: v.detach().clone() for k, v in learner.params.items()}
    t1 = time.perf_counter()
    if cfg.meta.estimator == "exact":
        steps = iters * gradient_evaluations_per_iteration(learner.config)
        rng = np.random.default_rng(cfg.run.seed + 7)
        params, _ = pretrain_on_objective(
            policy, family, config=learner.config, num_steps=steps, rng=rng
        )
        pretrained = Start(policy, params)
    else:
        horizon = cfg.meta.horizon or cfg.env.episode_length
        env = build.multitask_env(cfg, family)
        agent = build.make_ppo_agent(cfg, env)
        agent.learn(env, total_timesteps=meta_env_steps(cfg, horizon, iters))
        pretrained = Start(agent.policy, module_params(agent.policy))
    t2 = time.perf_counter()
    print(
        f"{cfg.meta.estimator}: MAML {iters} it {t1 - t0:.0f} s, pretrained {t2 - t1:.0f} s",
        flush=True,
    )
    return {
        "MAML": Start(policy, maml),
        "pretrained": pretrained,
        "random": random_start(policy, seed=cfg.run.seed + 7919),
    }


def evaluate(
    cfg: RunConfig, loader: Any, starts: dict[str, Start], *, split: str, stressed: bool
) -> EvaluationResult:
    """The meta-test protocol on the held-out tasks (``split``: test or validation)."""
    tasks = build.eval_tasks(cfg, loader)
    pcfg = build.make_protocol_config(cfg, tasks)
    arrays = [loader.get_task_arrays(*t) for t in tasks]
    env = pcfg.env
    if stressed:
        env = stressed_config(env, cfg.evaluation.stress_cost_bps, tasks=arrays)
    pcfg = replace(pcfg, env=env, test_split=split)
    return MetaTestProtocol(pcfg).run(starts, tasks, loader)


def _ci(ci: Any) -> list[float]:
    """[estimate, low, high] in percent of the initial capital."""
    return [round(100 * ci.estimate, 4), round(100 * ci.low, 4), round(100 * ci.high, 4)]


def table_figures(res: EvaluationResult) -> dict[str, Any]:
    """Every row's mean test-window return and backtest (%), and the goal's paired CIs."""
    rows = {}
    for r in res.rows:
        label = r.method if r.k is None else f"{r.method}@k{r.k}"
        bt = None if r.backtest_return is None else round(100 * r.backtest_return, 4)
        rows[label] = {"window": _ci(r.mean_return), "backtest": bt}
    return {
        "rows": rows,
        "maml_k1_minus_random_k1": _ci(res.difference("MAML@k1", "random@k1")),
        "maml_k1_minus_flat": _ci(res.difference("MAML@k1", "flat")),
        "maml_k1_minus_pretrained_k1": _ci(res.difference("MAML@k1", "pretrained@k1")),
        "maml_k1_minus_classical_selected": _ci(res.difference("MAML@k1", "classical-selected"))
        if "classical-selected" in res.returns
        else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="speed only, < 45 s")
    ap.add_argument("--config", default="configs/exact.yaml", help="the exact run config")
    ap.add_argument("--sampled-config", default="configs/sampled.yaml")
    ap.add_argument("--split", choices=("test", "validation"), default="test")
    ap.add_argument("--exact-only", action="store_true", help="skip the sampled table")
    ap.add_argument("--iterations", type=int, default=None, help="override exact iterations")
    ap.add_argument("--set", nargs="*", default=[], help="exact overrides key=value (yaml)")
    args = ap.parse_args()
    configure_cpu(threads=1)
    t_start = time.perf_counter()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    exact = apply_overrides(load_config(args.config), overrides)
    sampled = load_config(args.sampled_config)
    loader = build.make_loader(exact)
    out: dict[str, Any] = {"benchmark": "exact_trading", "quick": args.quick}
    out |= time_iterations(sampled, exact, loader, iterations=8 if args.quick else 12, warmup=2)
    print(f"speed: {out}", flush=True)
    if not args.quick:
        todo = [(exact, args.iterations)] + ([] if args.exact_only else [(sampled, None)])
        for cfg, iters in todo:
            starts = train_starts(cfg, loader, iterations=iters)
            name = cfg.meta.estimator
            for costs, stressed in (("default", False), ("stressed", True)):
                res = evaluate(cfg, loader, starts, split=args.split, stressed=stressed)
                print(f"{name} estimator, {costs} costs ({args.split} split):")
                print(res.format_table(), flush=True)
                out[f"{name}_{costs}"] = table_figures(res)
        out["split"] = args.split
        out["settings_exact"] = {"meta": asdict(exact.meta), "objective": asdict(exact.objective)}
    out["sec_total"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
