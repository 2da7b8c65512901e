"""The main job (``metatrade demo`` / ``make demo``): meta-train, baseline, meta-test, reports.

1. meta-train a policy with MAML on the training tasks of the embedded data;
2. pretrain the multi-task PPO baseline on the same tasks with the same number of
   environment steps (an honest comparison: same data, same budget);
3. run the meta-test protocol on the held-out tasks (MAML, PPO and random init, each
   adapted k = 0..3 steps, plus buy-and-hold and flat) and print the table;
4. backtest the adapted MAML and PPO policies on each held-out task's test split, print the
   reports of the first task and write every report, trade list and plot to the run dir.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from metatrade.training import build
from metatrade.training.config import RunConfig
from metatrade.training.trainer import Trainer


def meta_env_steps(cfg: RunConfig, horizon: int, iterations: int) -> int:
    """Environment steps meta-training takes (upper bound: episodes run to the horizon)."""
    m = cfg.meta
    per_task = m.episodes_per_task * max(1, m.num_inner_steps) + m.num_evaluation_episodes
    return iterations * m.meta_batch_size * per_task * horizon


def run_demo(cfg: RunConfig, console: Any, progress: bool = True) -> dict[str, Any]:
    """Run the whole job; returns {"evaluation": EvaluationResult, "reports": {...}, ...}."""
    t_start = time.perf_counter()
    run_dir = cfg.run_dir()
    show = None if progress else False
    loader = build.make_loader(cfg)
    heldout = build.eval_tasks(cfg, loader)
    train_tasks = build.task_pool(cfg, loader, "train")
    console.print(
        f"[bold]metatrade demo[/bold]: {len(train_tasks)} training tasks, "
        f"{len(heldout)} held-out ({', '.join(str(t) for t in heldout)}); run dir {run_dir}"
    )

    # 1. MAML meta-training.
    family = build.make_family(cfg, loader)
    console.print(
        f"\n[bold]1/4 meta-training[/bold] ({cfg.meta.num_meta_iterations} iterations, "
        f"{cfg.meta.meta_batch_size} tasks x {cfg.meta.episodes_per_task} episodes, "
        f"{cfg.meta.optimizer})"
    )
    trainer = Trainer(family, None, config=cfg, run_dir=run_dir, progress=show)
    t0 = time.perf_counter()
    trainer.meta_train()
    horizon = cfg.meta.num_steps or cfg.env.episode_length
    budget = meta_env_steps(cfg, horizon, cfg.meta.num_meta_iterations)
    console.print(f"meta-training: {time.perf_counter() - t0:.0f} s, {budget:,} env steps")
    policy = trainer._policy()
    with torch.no_grad():
        for name, p in policy.named_parameters():
            p.copy_(trainer.params[name])

    # 2. Multi-task PPO baseline with the same env-step budget.
    ppo_steps = budget if cfg.ppo.match_meta_budget else cfg.ppo.total_timesteps
    env = build.multitask_env(cfg, family)
    console.print(
        f"\n[bold]2/4 multi-task PPO baseline[/bold] ({env.num_tasks} tasks x "
        f"{env.episodes_per_task} episodes, {ppo_steps:,} env steps)"
    )
    t0 = time.perf_counter()
    ppo_trainer = Trainer(
        env, None, config=cfg, run_dir=run_dir / "ppo", progress=show, log_interval=10**9
    )
    ppo_trainer.train(total_timesteps=ppo_steps)
    console.print(f"PPO: {time.perf_counter() - t0:.0f} s")

    # 3. Meta-test on the held-out tasks.
    console.print("\n[bold]3/4 meta-test on held-out tasks[/bold]")
    t0 = time.perf_counter()
    result = build.run_meta_test(
        cfg, policy, run_dir, ppo_agent=ppo_trainer.agent, console=console,
        inner_lrs=trainer.learner.inner_lrs,  # learned Meta-SGD step sizes, if any
    )  # fmt: skip
    console.print(f"meta-test: {time.perf_counter() - t0:.0f} s")

    # 4. Backtest reports of the adapted policies (k = the largest adaptation step).
    k = max(cfg.evaluation.adaptation_steps)
    console.print(f"\n[bold]4/4 backtests of the adapted policies (k={k}) on the test split[/bold]")
    env_cfg = build.make_env_config(cfg)
    reports: dict[str, Any] = {}
    for i, task in enumerate(heldout):
        arrays = loader.get_task_arrays(*task)
        for label, start_policy in (("MAML", policy), ("PPO", ppo_trainer.agent.policy)):
            adapted = result.adapted.get((label, k))
            if adapted is None:
                continue
            params = {n: v[i] for n, v in adapted.items()}
            out = run_dir / "reports" / f"{task.instrument}_{task.timeframe}" / label.lower()
            reports[f"{task}/{label}"] = build.backtest_and_report(
                (start_policy, params),
                arrays,
                out,
                stress_bps=cfg.evaluation.stress_cost_bps,
                echo=False,
                split="test",
                config=env_cfg,
                name=f"{label} adapted k={k}",
            )
            if i == 0:
                console.print(reports[f"{task}/{label}"]["report"], soft_wrap=True)
    console.print(
        f"reports, trade lists and equity plots for all {len(heldout)} held-out task(s): "
        f"{run_dir / 'reports'}"
    )
    # 5. Walk-forward meta-test (issue 14): re-adapt before every fold, stitched record.
    from metatrade.training.walkforward import demo_walkforward

    console.print("\n[bold]walk-forward meta-test on the held-out tasks[/bold]")
    wf = demo_walkforward(cfg, policy, run_dir, ppo_agent=ppo_trainer.agent, console=console)
    total = time.perf_counter() - t_start
    console.print(f"\n[bold]done[/bold] in {total / 60:.1f} min; everything is in {run_dir}")
    return {"evaluation": result, "reports": reports, "walkforward": wf, "seconds": total,
            "run_dir": Path(run_dir)}  # fmt: skip
