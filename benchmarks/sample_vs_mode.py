"""Sampled actions or the mode: how should test windows trade a policy the exact objective
optimised (issue 19, item 5; ``evaluation.actions``)?

The exact objective maximises the expected P&L of the *stochastic* policy; a ledger can trade
its sampled actions (what was optimised) or its most probable action (no sampling noise).
This measures both on the same test windows, paired, for every start and k:

* ``--checkpoint RUN``: a meta-trained run (e.g. the demo's, ``metatrade meta-train --config
  demo``) on its held-out tasks, through the run's own protocol (``make_protocol_config``:
  the same adaptation, test windows and backtests), once with ``evaluation.actions: sample``
  and once with ``mode``;
* the synthetic case (default): AR(1) regimes (``metatrade.data.synthetic``), MAML-exact
  meta-trained on train regimes and measured on held-out ones, as a fraction of the oracle.

Per row: mean test-window return (% of C0) sampled and mode, the paired difference mode -
sample with its 95% hierarchical-bootstrap CI (tasks, then windows), and the whole-split
backtests both ways.

Usage:
    python benchmarks/sample_vs_mode.py --quick                       # < 45 s smoke run
    python benchmarks/sample_vs_mode.py                               # synthetic case
    python benchmarks/sample_vs_mode.py --checkpoint runs/demo-seed0  # a trained run
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data import DataLoader
from metatrade.data.synthetic import write_synthetic_tasks
from metatrade.envs.trading import TradingTaskFamily
from metatrade.evaluation.bootstrap import hierarchical_bootstrap_means, percentile_interval
from metatrade.evaluation.protocol import (
    EvaluationResult,
    MetaTestProtocol,
    ProtocolConfig,
    Start,
    module_params,
    random_start,
)
from metatrade.exact.settings import ObjectiveSettings
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.runtime import configure_cpu
from metatrade.seeding import derive_seed


def _paired(res: dict[str, EvaluationResult], seed: int) -> dict[str, Any]:
    """Per row: sampled and mode means, mode - sample [est, lo, hi] (% of C0), backtests."""
    out: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for label, sampled in res["sample"].returns.items():
        mode = res["mode"].returns[label]
        diff = (mode - sampled)[None]
        reps = hierarchical_bootstrap_means(diff, num_resamples=1000, rng=rng)[0]
        ci = percentile_interval(reps, float(diff.mean(axis=2).mean()))
        row = {
            "sample": round(100 * float(sampled.mean(1).mean()), 3),
            "mode": round(100 * float(mode.mean(1).mean()), 3),
            "mode_minus_sample": [round(100 * x, 3) for x in (ci.estimate, ci.low, ci.high)],
        }
        if label in res["sample"].backtests:
            row["backtest_sample"] = round(100 * float(res["sample"].backtests[label].mean()), 3)
            row["backtest_mode"] = round(100 * float(res["mode"].backtests[label].mean()), 3)
        if res["sample"].oracle_returns is not None:
            oracle = float(res["sample"].oracle_returns.mean(1).mean())
            row["oracle_fraction_sample"] = round(float(sampled.mean(1).mean()) / oracle, 3)
            row["oracle_fraction_mode"] = round(float(mode.mean(1).mean()) / oracle, 3)
        out[label] = row
    return out


def _both(cfg: ProtocolConfig, starts: dict[str, Start], tasks, loader) -> dict[str, Any]:
    return {
        name: MetaTestProtocol(replace(cfg, deterministic_test=name == "mode")).run(
            starts, tasks, loader
        )
        for name in ("sample", "mode")
    }


def run_checkpoint(path: str, seed: int) -> dict[str, Any]:
    """A trained run on its held-out tasks, its own protocol both ways."""
    from metatrade.training import build
    from metatrade.training.build import load_inner_lrs, load_meta_policy
    from metatrade.training.checkpoint import load_run_checkpoint, resolve_checkpoint
    from metatrade.training.pretrained import load_pretrained
    from metatrade.training.task_sets import eval_tasks, make_loader

    ck = resolve_checkpoint(path)
    cfg, state = load_run_checkpoint(ck)
    policy = load_meta_policy(cfg, state, ck)
    loader = make_loader(cfg)
    tasks = eval_tasks(cfg, loader)
    starts = {"MAML": Start(policy, module_params(policy), load_inner_lrs(state))}
    pretrained = load_pretrained(Path(path))
    if pretrained is not None:
        starts["pretrained"] = Start(policy, pretrained)
    starts["random"] = random_start(policy, seed=derive_seed(cfg.run.seed, "random start"))
    res = _both(build.make_protocol_config(cfg, tasks), starts, tasks, loader)
    print(res["sample"].format_table(), flush=True)
    print(res["mode"].format_table(), flush=True)
    return {"tasks": [str(t) for t in tasks], "rows": _paired(res, seed)}


def run_synthetic(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """MAML-exact on AR(1) regimes (the synthetic benchmark's recipe: the one-bar return
    over 8 bars, inner step 30, Adam 3e-3), measured on held-out regimes both ways."""
    quick = args.quick
    with tempfile.TemporaryDirectory() as tmp:
        n_bars = 1500 if quick else 3000
        write_synthetic_tasks(
            Path(tmp, "train"),
            3 if quick else 16,
            seed=derive_seed(seed, "synthetic tasks", "train"),
            n_bars=n_bars,
        )
        held = write_synthetic_tasks(
            Path(tmp, "held"),
            2 if quick else 12,
            seed=derive_seed(seed, "synthetic tasks", "held out"),
            n_bars=n_bars,
        )
        train = DataLoader(Path(tmp, "train"), cache_dir=False)
        held_loader = DataLoader(Path(tmp, "held"), cache_dir=False)
        env = TradingEnvConfig(
            lookback=8,
            episode_length=64,
            observation="position",
            features=("logret_1",),
            actions=args.actions,
        )
        family = TradingTaskFamily(train, env, period="train", seed=seed)
        probe = family.make_batch_env(train.get_available_tasks()[:1], 1)
        policy = make_policy(
            NetworkConfig(kind="mlp", hidden_sizes=(32, 32)),
            probe.observation_space,
            probe.action_space,
            seed=seed,
        )
        meta = MetaConfig(
            estimator="exact",
            optimizer="adam",
            lr=3e-3,
            inner_lr=30.0,
            meta_batch_size=2 if quick else 8,
            episodes_per_task=4 if quick else 8,
            num_evaluation_episodes=4 if quick else 8,
            seed=seed,
        )
        learner = MetaLearner(policy, family, meta)
        for _ in range(2 if quick else args.iterations):
            learner.step()
        starts = {
            "MAML": Start(policy, {k: v.detach().clone() for k, v in learner.params.items()}),
            "random": random_start(policy, seed=derive_seed(seed, "random start")),  # the CLI's
        }
        cfg = ProtocolConfig(
            adaptation_steps=(0, 1),
            adaptation_episodes=meta.episodes_per_task,
            test_episodes=16 if quick else 40,  # 4 windows: the oracle mean is noise
            episode_length=64,
            test_episode_length=64,
            adaptation=meta,
            objective=ObjectiveSettings(),
            env=env,
            oracle=held,
            oracle_threshold=60.0 / 1e6,
            seed=seed,
            test_split="test",
        )
        res = _both(cfg, starts, held_loader.get_available_tasks(), held_loader)
        print(res["sample"].format_table(), flush=True)
        return {"rows": _paired(res, seed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="< 45 s smoke run")
    ap.add_argument("--checkpoint", default=None, help="a meta-trained run (its held-out tasks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=300, help="synthetic: meta-iterations")
    ap.add_argument(
        "--actions", choices=("orders", "target"), default="orders", help="synthetic: env.actions"
    )
    args = ap.parse_args()
    configure_cpu(threads=1)
    t0 = time.perf_counter()
    if args.checkpoint:
        out = {
            "case": "checkpoint",
            "checkpoint": args.checkpoint,
            **run_checkpoint(args.checkpoint, args.seed),
        }
    else:
        out = {"case": "synthetic", "actions": args.actions, **run_synthetic(args.seed, args)}
    out.update(
        benchmark="sample_vs_mode", quick=args.quick, sec_total=round(time.perf_counter() - t0, 1)
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
