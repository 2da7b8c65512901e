"""Synthetic AR(1) benchmark (issues 4 and 13; named synthetic_regimes.py until issue 19
gave that name to the regime family's benchmark): does MAML adapt faster than pretraining or
scratch, with the sampled policy gradient and with the exact expected-P&L objective?

Tasks are AR(1) regimes of bar log returns (``metatrade.data.synthetic``): phi uniform in
[-0.5, 0.5] (momentum or mean reversion), sigma in [5e-4, 2e-3], 5-minute bars, through the
real pipeline (files -> DataLoader -> causal features -> envs, 25/35 INR brokerage).
Held-out tasks draw phi from the same range with unseen seeds. Per seed S:

* exact (issue 13; ``meta.estimator: exact``, ``env.observation: position``): MAML-exact
  (``MetaLearner``, Adam, one inner step on the windows before a random cut, meta-loss on the
  windows after it), pretrained-exact (``pretrain_on_objective``: Adam on the same objective,
  the same number of gradient evaluations) and random (a fresh init); every start adapted by
  the same exact inner loop on each held-out task's latest adaptation-split windows;
* sampled (issue 4, unchanged): MAML with TRPO on REINFORCE inner steps, adapted at test
  time by the same sampled inner loop.

Every start is measured in the ledger (``MetaTestProtocol``: the same random test windows
for every row) as a fraction of the oracle's return on those windows, with paired 95%
hierarchical-bootstrap CIs of the differences (MAML-exact at k = 1 minus pretrained-exact
at k = 0 and at k = 1, and minus random at k = 1). Target (issue 13): MAML-exact at k = 1
>= 0.75 of the oracle and the three paired differences above zero on every seed.

Measured (RESULTS.md; ``--seeds S`` for S = 0, 1, 2, one process each): MAML-exact at k = 1
reaches 0.77 of the oracle (0.74 / 0.80 / 0.78): target met; its paired differences to
pretrained-exact (k = 0 and 1) and random (k = 1) are above zero on every seed; sampled MAML
k = 1 0.52.

How the exact settings were chosen: on VALIDATION tasks only (``--tasks validation``: 24
regimes of their own seed (before issue 22's seed scheme: 5000 + S), never the held-out test regimes, scored on their
validation split), seed 0. With all 22 features x 4 bars: inner step size 1 / 30 / 100 ->
0.18 / 0.55 / 0.45 of the oracle at k = 1; 1,000 iterations, Adam 1e-2, Meta-SGD, lookback
1, other window shapes, the raw P&L objective and mode actions did not pass 0.61. Observing
only the one-bar log return (the issue's prototype's "raw-return features",
``--exact-features logret_1``) over 1 / 4 / 8 bars: 0.61 / 0.71 / 0.83; kept 8 bars, inner
step 30, Adam 3e-3, 300 iterations, 8 x 64-bar windows (docs/exact.md lists every run). The
sampled settings are issue 4's (docs/notes/benchmark-history.md).

Usage:
    python benchmarks/synthetic_ar1.py --quick   # < 45 s smoke run, 1 seed (numbers not meaningful)
    python benchmarks/synthetic_ar1.py           # full mode, seeds 0 1 2 (~18 min per seed under load)
    python benchmarks/synthetic_ar1.py --tasks validation --no-sampled --seeds 0  # tuning
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data import DataLoader
from metatrade.data.features import FEATURE_NAMES, available_features
from metatrade.data.synthetic import write_synthetic_tasks
from metatrade.envs.trading import TradingTaskFamily
from metatrade.evaluation.protocol import (
    EvaluationResult,
    MetaTestProtocol,
    ProtocolConfig,
    Start,
    random_start,
)
from metatrade.exact.settings import ObjectiveSettings
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.pretrain import gradient_evaluations_per_iteration, pretrain_on_objective
from metatrade.runtime import configure_cpu
from metatrade.seeding import derive_seed

LOOKBACK = 4  # the signal is the last bar's return; a short window keeps the budget small
HIDDEN = (32, 32)
KS = (0, 1, 3)
# ---- sampled MAML (issue 4's settings)
ITERATIONS = 100  # meta-iterations (post-update return still rising at 60)
GAMMA, GAE_LAMBDA = 0.5, 0.5  # the edge is one bar ahead: short credit assignment
INNER_LR = 10.0  # normalised advantages: 0.1 moves the policy by a KL of ~3e-5
MAX_KL = 0.01  # TRPO trust region (the paper's)
# ---- exact MAML (issue 13), chosen on validation tasks (module docstring)
EXACT_ITERATIONS = 300
EXACT_INNER_LR = 30.0  # the loss is P&L per bar in units of volatility: small gradients
EXACT_LR = 3e-3  # Adam
EXACT_WINDOWS, EXACT_WINDOW_BARS = 8, 64  # 512 bars to adapt on, 512 after the cut to score
EXACT_META_BATCH = 10
# The exact rows observe the last 8 bars' one-bar log return (and their position) only, as
# the prototype did: chosen on validation regimes (seed 0: 0.83 of the oracle at
# k = 1, against 0.55 with all 22 features x 4 bars; docs/exact.md lists every run)
EXACT_FEATURES, EXACT_LOOKBACK = "logret_1", 8
TEST_WINDOW_BARS = 64
# The paired differences: MAML-exact after one step minus pretrained-exact unadapted
# and after one step, and minus random after one step (all adapted by the same inner loop).
TARGET_DIFFS = (
    ("maml_k1_minus_pretrained_exact_k0", "MAML@k1", "pretrained@k0"),
    ("maml_k1_minus_pretrained_exact_k1", "MAML@k1", "pretrained@k1"),
    ("maml_k1_minus_random_exact_k1", "MAML@k1", "random@k1"),
)


def write_tasks(tmp: str, seed: int, *, quick: bool, tasks: str) -> tuple[Any, Any, dict]:
    """(train loader, held-out loader, held-out regimes). ``tasks``: "test" (the reported
    figures) or "validation" (for choosing settings), each set of its own derived seed. The
    loaders hold every available feature; each run's ``env.features`` selects its own."""
    n_train, n_test = (6, 3) if quick else (20, 24)
    n_bars, n_bars_test = (1500, 1500) if quick else (3000, 6000)
    held_seed = derive_seed(seed, "synthetic tasks", "held out", tasks)
    train_seed = derive_seed(seed, "synthetic tasks", "train")
    write_synthetic_tasks(Path(tmp, "train"), n_train, seed=train_seed, n_bars=n_bars)
    held = write_synthetic_tasks(Path(tmp, "held"), n_test, seed=held_seed, n_bars=n_bars_test)
    every = available_features()
    return (
        DataLoader(Path(tmp, "train"), cache_dir=False, features=every),
        DataLoader(Path(tmp, "held"), cache_dir=False, features=every),
        held,
    )


def protocol(
    starts: dict[str, Start],
    loader: DataLoader,
    held: dict,
    *,
    adaptation: MetaConfig,
    env: TradingEnvConfig,
    objective: ObjectiveSettings,
    seed: int,
    quick: bool,
    test_split: str,
    deterministic: bool = False,
) -> EvaluationResult:
    """The meta-test protocol: the same test windows for every start (paired rows);
    ``deterministic``: every start trades its policy's mode instead of sampled actions."""
    cfg = ProtocolConfig(
        adaptation_steps=KS,
        adaptation_episodes=adaptation.episodes_per_task,
        test_episodes=10 if quick else 50,
        episode_length=env.episode_length,
        test_episode_length=TEST_WINDOW_BARS,
        adaptation=adaptation,
        objective=objective,
        env=env,
        oracle=held,
        bootstrap_samples=1000,
        seed=seed,
        oracle_threshold=60.0 / 1e6,
        backtest=False,
        test_split=test_split,
        deterministic_test=deterministic,
    )
    return MetaTestProtocol(cfg).run(starts, loader.get_available_tasks(), loader)


def run_exact(train: DataLoader, seed: int, args: argparse.Namespace) -> tuple[dict, dict, Any]:
    """Meta-train MAML-exact, pretrain on the objective, draw a random start: (starts,
    timings, (meta config, env config, objective))."""
    features = None if args.exact_features == "all" else tuple(args.exact_features.split(","))
    env = TradingEnvConfig(
        lookback=args.exact_lookback,
        episode_length=args.window_bars,
        observation="position",
        features=FEATURE_NAMES if features is None else features,
    )
    objective = ObjectiveSettings(normalize=not args.raw_pnl, risk=args.risk)
    family = TradingTaskFamily(train, env, period="train", seed=seed, objective=objective)
    probe = family.make_batch_env(train.get_available_tasks()[:1], 1)
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=HIDDEN),
        probe.observation_space,
        probe.action_space,
        seed=seed,
    )
    cfg = MetaConfig(
        estimator="exact",
        optimizer="adam",
        lr=args.exact_lr,
        inner_lr=args.exact_inner_lr,
        learn_inner_lr=args.learn_inner_lr,
        meta_batch_size=2 if args.quick else EXACT_META_BATCH,
        episodes_per_task=4 if args.quick else args.windows,  # quick: short splits
        num_evaluation_episodes=4 if args.quick else args.windows,
        seed=seed,
    )
    iters = 3 if args.quick else args.exact_iterations
    learner = MetaLearner(policy, family, cfg)
    t0 = time.perf_counter()
    for _ in range(iters):
        learner.step()
    t1 = time.perf_counter()
    steps = iters * gradient_evaluations_per_iteration(cfg)  # the same gradient evaluations
    pretrained, _ = pretrain_on_objective(
        policy,
        family,
        config=cfg,
        num_steps=steps,
        rng=np.random.default_rng(derive_seed(seed, "pretrained", "windows")),
    )
    t2 = time.perf_counter()
    starts = {
        "MAML": Start(
            policy, {k: v.detach().clone() for k, v in learner.params.items()}, learner.inner_lrs
        ),
        "pretrained": Start(policy, pretrained),
        "random": random_start(policy, seed=derive_seed(seed, "random start")),  # the CLI's
    }
    timings = {"sec_maml_exact": t1 - t0, "sec_pretrain_exact": t2 - t1, "exact_iters": iters}
    return starts, timings, (cfg, env, objective)


def run_sampled(train: DataLoader, seed: int, args: argparse.Namespace) -> tuple[dict, dict, Any]:
    """Issue 4's sampled MAML (TRPO, REINFORCE inner step, full observation)."""
    horizon = 32 if args.quick else 64
    env = TradingEnvConfig(lookback=LOOKBACK, episode_length=horizon, features=FEATURE_NAMES)
    family = TradingTaskFamily(train, env, period="train", seed=seed)
    probe = family.make_batch_env(train.get_available_tasks()[:1], 1)
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=HIDDEN),
        probe.observation_space,
        probe.action_space,
        seed=seed,
    )
    meta_batch, eps = (4, 4) if args.quick else (10, 40)
    cfg = MetaConfig(
        meta_batch_size=meta_batch,
        episodes_per_task=eps,
        num_evaluation_episodes=eps,
        inner_lr=INNER_LR,
        optimizer="trpo",
        max_kl=MAX_KL,
        gamma=GAMMA,
        gae_lambda=GAE_LAMBDA,
        seed=seed,
    )
    iters = 3 if args.quick else args.sampled_iterations
    learner = MetaLearner(policy, family, cfg)
    t0 = time.perf_counter()
    for _ in range(iters):
        learner.step()
    starts = {"MAML": Start(policy, {k: v.detach().clone() for k, v in learner.params.items()})}
    timings = {"sec_maml_sampled": time.perf_counter() - t0, "sampled_iters": iters}
    return starts, timings, (cfg, env, ObjectiveSettings())


def _ci(ci: Any) -> list[float]:
    return [round(ci.estimate, 4), round(ci.low, 4), round(ci.high, 4)]


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one seed: oracle fractions [estimate, low, high] and paired CIs."""
    split = "test" if args.tasks == "test" else "validation"
    out: dict[str, Any] = {"seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        train, held_loader, held = write_tasks(tmp, seed, quick=args.quick, tasks=args.tasks)
        starts, timings, (cfg, env, objective) = run_exact(train, seed, args)
        kw = {"seed": seed, "quick": args.quick, "test_split": split}
        t0 = time.perf_counter()
        res = protocol(
            starts,
            held_loader,
            held,
            adaptation=cfg,
            env=env,
            objective=objective,
            deterministic=args.deterministic_test,
            **kw,
        )
        timings["sec_eval_exact"] = time.perf_counter() - t0
        print(f"seed {seed}, exact estimator:\n{res.format_table()}", flush=True)
        for m, name in (("MAML", "maml_exact"), ("pretrained", "pretrained_exact")):
            for k in KS:
                out[f"{name}_k{k}"] = _ci(res.row(m, k).oracle_fraction)
        for k in KS:
            out[f"random_exact_k{k}"] = _ci(res.row("random", k).oracle_fraction)
        for key, a, b in (
            *TARGET_DIFFS,
            ("maml_k0_minus_pretrained_exact_k0", "MAML@k0", "pretrained@k0"),
        ):
            out[key] = _ci(res.difference(a, b, oracle=True))
        out["buy_and_hold"] = _ci(res.row("buy-and-hold").oracle_fraction)
        if not args.no_sampled:
            starts, t_s, (cfg, env, objective) = run_sampled(train, seed, args)
            res = protocol(
                starts,
                held_loader,
                held,
                adaptation=cfg,
                env=env,
                objective=objective,
                deterministic=args.deterministic_test,
                **kw,
            )
            print(f"seed {seed}, sampled estimator:\n{res.format_table()}", flush=True)
            for k in KS:
                out[f"maml_sampled_k{k}"] = _ci(res.row("MAML", k).oracle_fraction)
            timings |= t_s
    out["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return out


def summarise(per_seed: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Means over seeds of the estimates, the per-seed figures, and the issue's target."""
    keys = [k for k, v in per_seed[0].items() if isinstance(v, list)]
    diffs = [k for k, _, _ in TARGET_DIFFS]
    mean = {k: round(float(np.mean([s[k][0] for s in per_seed])), 4) for k in keys}
    every_seed_positive = all(s[k][1] > 0 for s in per_seed for k in diffs)
    return {
        "benchmark": "synthetic_ar1",
        "quick": args.quick,
        "tasks": args.tasks,
        "seeds": [s["seed"] for s in per_seed],
        **mean,  # means over seeds of each estimate (oracle fractions and differences)
        "difference_cis": {  # per seed [est, lo, hi]
            k: [s[k] for s in per_seed] for k in keys if "_minus_" in k
        },
        "target_maml_exact_k1_ge_0.75": bool(mean["maml_exact_k1"] >= 0.75),
        "target_differences_above_zero_every_seed": bool(every_seed_positive),
        "settings_exact": {
            "iterations": args.exact_iterations,
            "lookback": args.exact_lookback,
            "features": args.exact_features,
            "inner_lr": args.exact_inner_lr,
            "adam_lr": args.exact_lr,
            "windows": args.windows,
            "window_bars": args.window_bars,
            "normalize": not args.raw_pnl,
            "risk": args.risk,
        },
        "per_seed": per_seed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="< 45 s smoke run (1 seed)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    ap.add_argument("--tasks", choices=("test", "validation"), default="test")
    ap.add_argument("--no-sampled", action="store_true", help="skip the sampled MAML")
    ap.add_argument("--sampled-iterations", type=int, default=ITERATIONS)
    ap.add_argument("--exact-iterations", type=int, default=EXACT_ITERATIONS)
    ap.add_argument("--exact-inner-lr", type=float, default=EXACT_INNER_LR)
    ap.add_argument("--exact-lr", type=float, default=EXACT_LR, help="Adam learning rate")
    ap.add_argument("--windows", type=int, default=EXACT_WINDOWS, help="windows per side of a cut")
    ap.add_argument("--window-bars", type=int, default=EXACT_WINDOW_BARS)
    ap.add_argument(
        "--exact-lookback", type=int, default=EXACT_LOOKBACK, help="exact: env.lookback"
    )
    ap.add_argument("--raw-pnl", action="store_true", help="objective.normalize false")
    ap.add_argument("--risk", type=float, default=0.0, help="objective.risk")
    ap.add_argument(
        "--learn-inner-lr", action="store_true", help="MAML-exact with Meta-SGD step sizes"
    )
    ap.add_argument(
        "--exact-features",
        default=EXACT_FEATURES,
        help="exact rows' env.features: these columns (comma-separated names of "
        "metatrade.data.features.available_features()); 'all': the 22 standard ones",
    )
    ap.add_argument(
        "--deterministic-test",
        action="store_true",
        help="every start (exact and sampled) trades its policy's mode on the test windows",
    )
    args = ap.parse_args()
    configure_cpu(threads=1)  # + keep freed memory (metatrade.runtime)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    t0 = time.perf_counter()
    per_seed = [run_seed(s, args) for s in seeds]
    out = summarise(per_seed, args)
    out["sec_total"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
