"""Walk-forward meta-test benchmark (issue 14): the stitched out-of-sample record of MAML,
pretrained (multi-task PPO) and random starts, each re-adapted before every fold, next to
the same starts frozen, the classical adaptive rules re-fitted on the same rows before every
fold (plug-in AR, momentum, reversal, time of day, classical-selected), buy-and-hold and
flat; pooled over held-out tasks.

Two families:

* Finnifty (embedded real data): meta-train on Nifty and Bank Nifty, hold out Finnifty;
* synthetic AR(1) regimes (``metatrade.data.synthetic``): held-out regimes with unseen seeds.

Protocol: from each task's validation split to its last bar, folds of 5 sessions, each
start adapted with k = 1 inner step on the 10 sessions before the fold (the training inner
loop: vpg, same alpha), carry mode (a live account), mode actions, 25/35 INR per order.
The table gives annualised Sharpe with a stationary-bootstrap 95% interval, PSR, DSR
(trials = the rows of the table) and the per-side break-even cost in bps.

Usage:
    python benchmarks/walk_forward.py --quick   # < 45 s smoke run (numbers not meaningful)
    python benchmarks/walk_forward.py           # full mode (several minutes on 2 cores)
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from metatrade.agents.ppo import PPOAgent, PPOConfig
from metatrade.data import DataLoader, HeldOut
from metatrade.data.synthetic import write_synthetic_tasks
from metatrade.data.task_arrays import TaskId
from metatrade.envs.trading import TradingTaskFamily
from metatrade.evaluation.baselines import CLASSICAL
from metatrade.evaluation.protocol import Start, module_params, random_start
from metatrade.evaluation.walkforward import (
    FoldSpec,
    InnerLoopAdapter,
    WalkForwardConfig,
    load_tasks,
    run_walkforward,
)
from metatrade.evaluation.walkforward.report import save_report, text_table
from metatrade.io import json_safe
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.runtime import configure_cpu
from metatrade.seeding import derive_seed

LOOKBACK = 8
HIDDEN = (32, 32)
GAMMA, GAE_LAMBDA, INNER_LR = 0.9, 0.9, 1.0  # the demo's inner loop


def train_starts(
    loader: DataLoader, env: TradingEnvConfig, *, iters: int, eps: int, seed: int
) -> dict:
    """MAML meta-parameters, multi-task PPO with the same env steps, a random init."""
    family = TradingTaskFamily(loader, env, period="train", seed=seed)
    probe = family.make_batch_env(loader.tasks("train")[:1], 1)
    policy = PPOAgent.from_env(probe, PPOConfig(hidden_sizes=HIDDEN, seed=seed)).policy
    meta = MetaConfig(
        meta_batch_size=4,
        episodes_per_task=eps,
        num_evaluation_episodes=eps,
        inner_lr=INNER_LR,
        optimizer="adam",
        lr=1e-3,
        gamma=GAMMA,
        gae_lambda=GAE_LAMBDA,
        seed=seed,
    )
    learner = MetaLearner(policy, family, meta)
    for _ in range(iters):
        learner.step()
    steps = iters * 4 * 2 * eps * env.episode_length
    arrays = [loader.get_task_arrays(*t) for t in loader.tasks("train")]
    ppo_env = BatchTradingEnv(arrays, 2, env, seed=seed)
    agent = PPOAgent.from_env(
        ppo_env,
        PPOConfig(
            hidden_sizes=HIDDEN,
            n_steps=env.episode_length,
            gamma=GAMMA,
            gae_lambda=GAE_LAMBDA,
            seed=seed,  # the CLI's pretrained start: PPO seeded by run.seed (make_ppo_config)
        ),
    )
    agent.learn(ppo_env, total_timesteps=steps)
    return {
        "MAML": Start(policy, {k: v.detach().clone() for k, v in learner.params.items()}),
        "pretrained": Start(agent.policy, module_params(agent.policy)),
        "random": random_start(policy, seed=derive_seed(seed, "random start")),  # the CLI's
    }


def walk(name: str, loader: DataLoader, tasks: list, args, quick: bool, out: Path | None) -> dict:
    """Train the starts on ``loader``'s training tasks, walk forward on ``tasks`` (prepared)."""
    env = TradingEnvConfig(lookback=LOOKBACK, episode_length=32 if quick else 64)
    t0 = time.perf_counter()
    starts = train_starts(
        loader, env, iters=2 if quick else 40, eps=4 if quick else 16, seed=args.seed
    )
    train_s = time.perf_counter() - t0
    adaptation = AdaptationConfig(
        episodes_per_task=4 if quick else 16, inner_lr=INNER_LR, gamma=GAMMA, gae_lambda=GAE_LAMBDA
    )
    adapter = InnerLoopAdapter(env, adaptation, steps=1)
    spec = FoldSpec(fold_bars=5, adapt_bars=10, unit="days")
    cfg = WalkForwardConfig(
        folds=spec,
        env=env,
        start="validation",
        carry=True,
        classical=CLASSICAL,
        bootstrap_samples=200 if quick else 2000,
        seed=args.seed,
    )
    res = run_walkforward(starts, tasks, adapter, cfg)
    print(f"\n== {name}: pooled over {', '.join(t.task for t in res.tasks)}")
    print(text_table(res))
    if out is not None:
        print("report:", save_report(res, out / name)["html"])
    pooled = res.pooled
    rows = {
        k: {
            "sharpe": m["sharpe"],
            "sharpe_ci": [pooled.cis[k]["sharpe"].low, pooled.cis[k]["sharpe"].high],
            "dsr": m["dsr"],
            "psr": m["psr"],
            "breakeven_bps": m["breakeven_bps"],
            "total_return": m["total_return"],
            "trades": m["trades"],
        }
        for k, m in pooled.metrics.items()
    }
    diffs = {
        k: [v["sharpe"].estimate, v["sharpe"].low, v["sharpe"].high]
        for k, v in pooled.differences.items()
    }
    return {
        "tasks": [t.task for t in res.tasks],
        "days": int(pooled.daily.shape[0]),
        "rows": rows,
        "sharpe_differences": diffs,
        "n_trials": pooled.trials["n_trials"],
        "sec_train": round(train_s, 1),
        "sec_walkforward": round(res.seconds["total"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="< 45 s smoke run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=str, default=None, help="folder for the HTML/CSV/JSON reports")
    args = ap.parse_args()
    configure_cpu(threads=1)
    quick = args.quick
    out = Path(args.out) if args.out else None
    t_start = time.perf_counter()
    real = DataLoader(heldout=HeldOut(instruments=("Finnifty",)))
    tfs = ("30", "60") if quick else ("5", "10", "15", "20", "30", "45", "60")
    doc = {"benchmark": "walk_forward", "quick": quick}
    held_real = load_tasks(real, [TaskId("Finnifty", tf) for tf in tfs])
    doc["finnifty"] = walk("finnifty", real, held_real, args, quick, out)
    with tempfile.TemporaryDirectory() as tmp:
        n_train, n_test = (4, 2) if quick else (12, 8)
        write_synthetic_tasks(
            Path(tmp, "train"),
            n_train,
            seed=derive_seed(args.seed, "synthetic tasks", "train"),
            n_bars=2000 if quick else 5000,
        )
        write_synthetic_tasks(
            Path(tmp, "test"),
            n_test,
            seed=derive_seed(args.seed, "synthetic tasks", "held out"),
            n_bars=2000 if quick else 5000,
        )
        syn = DataLoader(Path(tmp, "train"), cache_dir=False)
        held = DataLoader(Path(tmp, "test"), cache_dir=False)
        tasks = load_tasks(held, held.get_available_tasks())
        doc["synthetic"] = walk("synthetic", syn, tasks, args, quick, out)
    doc["sec_total"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(json_safe(doc)))


if __name__ == "__main__":
    main()
