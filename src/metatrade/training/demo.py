"""The main job (``metatrade demo`` / ``make demo``): meta-train, baseline, meta-test, reports.

1. meta-train a policy with MAML on the training tasks of the embedded data;
2. pretrain the multi-task PPO baseline on the same tasks with the same number of
   environment steps (an honest comparison: same data, same budget);
3. run the meta-test protocol on the held-out tasks' test split (a final report: each
   table that reads the test period is a look, recorded in the trial registry and stated
   under the table; every setting was chosen on validation, configs/demo.yaml) (MAML, PPO
   and random init, each
   adapted k = 0..3 steps; the classical adaptive rules (plug-in AR, momentum, reversal,
   time of day and classical-selected) fitted on the same adaptation rows; buy-and-hold and
   flat) and print the table with the paired difference MAML k=1 minus classical-selected,
   at each instrument's own costs (the embedded NSE indices: the origin's flat brokerage)
   and again at realistic NSE index-futures costs (``REALISTIC_COSTS``, docs/market.md);
4. backtest the adapted MAML and PPO policies on each held-out task's test split, print the
   reports of the first task and write every report, trade list and plot to the run dir.

Steps 1 and 2 checkpoint as they go; ``resume=True`` continues them from the run directory
(a finished step is loaded, not redone, after checking it is of this run: its run id,
``training.artefacts``) and redoes steps 3 and 4. ``overwrite=True`` moves a replaced run
aside whole (``<run>.replaced-<time>/``), its baselines and reports included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metatrade.agents.networks.base import Policy
from metatrade.io import run_dir_lock
from metatrade.training import build, commands, task_sets
from metatrade.training.checkpoint import PPO_DIR, checkpoint_path, load_run_checkpoint
from metatrade.training.config import RunConfig, apply_overrides
from metatrade.training.pretrained import pretrained_for_run
from metatrade.training.trainer import Trainer

if TYPE_CHECKING:
    from metatrade.agents.ppo import PPOAgent

REALISTIC_COSTS = "nse_index_futures"
"""the cost preset of the meta-test's second table (statutory charges, docs/market.md)"""
DEMO_COMMAND = "metatrade demo"
"""what the demo's looks at the test period record (each table that reads it is one)"""


def meta_env_steps(cfg: RunConfig, horizon: int, iterations: int) -> int:
    """Environment steps meta-training takes (upper bound: episodes run to the horizon)."""
    m = cfg.meta
    per_task = m.episodes_per_task * max(1, m.num_inner_steps) + m.num_evaluation_episodes
    return iterations * m.meta_batch_size * per_task * horizon


def run_demo(
    cfg: RunConfig,
    console: Any,
    progress: bool = True,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the whole job; returns {"evaluation": EvaluationResult, "reports": {...}, ...}.

    ``resume``: continue the run in ``cfg.run_dir()``; ``overwrite``: replace it (else a run
    directory that already holds one is a ``RunDirError``). Holds the run dir's lock."""
    with run_dir_lock(cfg.run_dir()):
        return _run_demo(cfg, console, progress, resume=resume, overwrite=overwrite)


def _train_both(
    cfg: RunConfig, family: Any, console: Any, show: bool | None, *, resume: bool, overwrite: bool
) -> tuple[Trainer, Trainer]:
    """Steps 1 and 2: the meta-trained trainer and the PPO baseline's trainer."""
    run_dir = cfg.run_dir()
    console.print(
        f"\n[bold]1/4 meta-training[/bold] ({cfg.meta.num_meta_iterations} iterations, "
        f"{cfg.meta.meta_batch_size} tasks x {cfg.meta.episodes_per_task} episodes, "
        f"{cfg.meta.optimizer})"
    )
    trainer = Trainer(family, None, config=cfg, run_dir=run_dir, progress=show, overwrite=overwrite)
    t0 = time.perf_counter()
    _meta_step(trainer, _resumable(checkpoint_path(run_dir), console, resume=resume), console)
    horizon = cfg.meta.horizon or cfg.env.episode_length
    budget = meta_env_steps(cfg, horizon, cfg.meta.num_meta_iterations)
    console.print(f"meta-training: {time.perf_counter() - t0:.0f} s, {budget:,} env steps")

    ppo_steps = budget if cfg.ppo.match_meta_budget else cfg.ppo.total_timesteps
    env = build.multitask_env(cfg, family)
    console.print(
        f"\n[bold]2/4 multi-task PPO baseline[/bold] ({env.num_tasks} tasks x "
        f"{env.episodes_per_task} episodes, {ppo_steps:,} env steps)"
    )
    t0 = time.perf_counter()
    ppo_trainer = Trainer(
        env,
        None,
        config=cfg,
        run_dir=run_dir,
        progress=show,
        log_interval=10**9,
        overwrite=overwrite,
    )
    ppo_last = _resumable(checkpoint_path(run_dir / PPO_DIR), console, resume=resume)
    ppo_trainer.run_id = trainer.run_id
    _ppo_step(ppo_trainer, ppo_last, ppo_steps, console)
    console.print(f"PPO: {time.perf_counter() - t0:.0f} s")
    return trainer, ppo_trainer


def _meta_step(trainer: Trainer, last: Path | None, console: Any) -> None:
    """Meta-train, continuing checkpoint ``last`` if given (loaded if already finished)."""
    if last is not None and _finished(last, trainer.config.meta.num_meta_iterations):
        trainer.restore(last)
        console.print(f"meta-training already finished: loaded {last}")
    else:
        trainer.meta_train(resume=last)


def _ppo_step(trainer: Trainer, last: Path | None, budget: int, console: Any) -> None:
    """Train the PPO baseline, continuing checkpoint ``last`` if given (the saved agent is
    loaded if that run already finished)."""
    from metatrade.training.artefacts import PPO_AGENT, find_artefact

    env = build.ppo_batch_env(trainer.env)
    agent_file = None
    if last is not None and trainer.run_dir is not None:
        agent_file = find_artefact(trainer.run_dir, PPO_AGENT, trainer.run_id, "PPO baseline")
    if last is not None and agent_file is not None:
        from metatrade.agents.ppo import PPOAgent

        slots = env.num_tasks * env.episodes_per_task
        total = max(1, -(-budget // (trainer.config.ppo.n_steps * slots)))
        if _finished(last, total):
            trainer.agent = PPOAgent.load_model(agent_file, env=env)
            console.print(f"PPO baseline already trained: loaded {agent_file}")
            return
    trainer.train(total_timesteps=budget, resume=last)


def _resumable(path: Path, console: Any, *, resume: bool) -> Path | None:
    if resume and not path.is_file():
        console.print(f"no checkpoint {path}: this step starts from the beginning")
    return path if resume and path.is_file() else None


def _finished(path: Path, total: int) -> bool:
    _, state = load_run_checkpoint(path)
    return int(state["iteration"]) >= total


def _run_demo(
    cfg: RunConfig, console: Any, progress: bool, *, resume: bool, overwrite: bool
) -> dict[str, Any]:
    t_start = time.perf_counter()
    run_dir = cfg.run_dir()
    show = None if progress else False
    loader = task_sets.make_loader(cfg)
    heldout = task_sets.eval_tasks(cfg, loader)
    train_tasks = task_sets.task_pool(cfg, loader, "train")
    console.print(
        f"[bold]metatrade demo[/bold]: {len(train_tasks)} training tasks, "
        f"{len(heldout)} held-out ({', '.join(str(t) for t in heldout)}); run dir {run_dir}"
    )

    # 1. MAML meta-training; 2. the multi-task PPO baseline with the same env-step budget.
    family = build.make_family(cfg, loader)
    trainer, ppo_trainer = _train_both(
        cfg, family, console, show, resume=resume, overwrite=overwrite
    )
    got = _trained(trainer, ppo_trainer)
    pretrained = pretrained_for_run(
        cfg, family, got.policy, console, resume=resume, run_id=trainer.run_id
    )

    # 3. Meta-test on the held-out tasks, at the instruments' own costs, then realistic ones.
    costs = sorted({loader.instrument(t.instrument).cost_name for t in heldout})
    console.print(
        f"\n[bold]3/4 meta-test on held-out tasks[/bold] (each instrument's costs: "
        f"{', '.join(costs)})"
    )
    result = _meta_test(cfg, got, pretrained, console, out=run_dir)
    realistic = _meta_test_at_realistic_costs(cfg, got, pretrained, console)

    # 4. Backtest reports of the adapted policies (k = the largest adaptation step).
    reports = _backtest_reports(
        cfg, loader, heldout, result, got.policy, got.ppo_agent.policy, console
    )
    # 5. Walk-forward meta-test (issue 14): re-adapt (and re-fit the classical rows) before
    # every fold, stitched record.
    from metatrade.training.walkforward import demo_walkforward

    console.print("\n[bold]walk-forward meta-test on the held-out tasks[/bold]")
    wf = demo_walkforward(
        cfg, got.policy, run_dir, ppo_agent=got.ppo_agent, pretrained=pretrained, console=console
    )
    from metatrade.training.provenance import report_provenance

    report_provenance(cfg, run_dir, console)  # where each setting was chosen (issue 21)
    _stamp(run_dir)
    total = time.perf_counter() - t_start
    console.print(f"\n[bold]done[/bold] in {total / 60:.1f} min; everything is in {run_dir}")
    return {
        "evaluation": result,
        "evaluation_costs": {REALISTIC_COSTS: realistic},
        "reports": reports,
        "walkforward": wf,
        "seconds": total,
        "run_dir": Path(run_dir),
    }


@dataclass(frozen=True)
class _Trained:
    """What steps 1-2 leave for the tests: the meta-trained policy (its meta-parameters
    loaded), its learned Meta-SGD step sizes (if any) and the PPO baseline."""

    policy: Policy
    inner_lrs: dict[str, torch.Tensor] | None
    ppo_agent: PPOAgent


def _trained(trainer: Trainer, ppo_trainer: Trainer) -> _Trained:
    from metatrade.agents.ppo import PPOAgent

    policy, learner, ppo_agent = trainer._policy(), trainer.learner, ppo_trainer.agent
    if not isinstance(policy, Policy) or learner is None or not isinstance(ppo_agent, PPOAgent):
        raise TypeError("the demo meta-trains a Policy (make_policy) and trains a PPOAgent")
    with torch.no_grad():
        for name, p in policy.named_parameters():
            p.copy_(trainer.params[name])
    return _Trained(policy, learner.inner_lrs, ppo_agent)


def _meta_test(
    cfg: RunConfig,
    got: _Trained,
    pretrained: dict[str, torch.Tensor] | None,
    console: Any,
    *,
    out: Path,
    label: str = "",
) -> Any:
    """Step 3: ``commands.run_meta_test`` of the trained starts, written under ``out``."""
    t0 = time.perf_counter()
    result = commands.run_meta_test(
        cfg,
        got.policy,
        out,
        ppo_agent=got.ppo_agent,
        console=console,
        inner_lrs=got.inner_lrs,  # learned Meta-SGD step sizes, if any
        pretrained=pretrained,
        final=True,  # the demo is a final report: its reads of the test split are looks
        command=DEMO_COMMAND,
    )
    console.print(f"meta-test{label}: {time.perf_counter() - t0:.0f} s")
    return result


def _meta_test_at_realistic_costs(
    cfg: RunConfig, got: _Trained, pretrained: dict[str, torch.Tensor] | None, console: Any
) -> Any:
    """Step 3 again with ``env.costs`` = ``REALISTIC_COSTS`` (same starts, same seeds): the
    table a sceptic asks for first. Written to ``<run>/costs_<preset>/eval``."""
    at = apply_overrides(cfg, {"env.costs": {"preset": REALISTIC_COSTS}})
    costs = build.make_env_config(at).costs
    assert costs is not None
    console.print(
        f"\n[bold]3/4 meta-test again at {REALISTIC_COSTS} costs[/bold] ({costs.describe('INR')}; "
        "sources: docs/market.md)"
    )
    out = cfg.run_dir() / f"costs_{REALISTIC_COSTS}"
    return _meta_test(at, got, pretrained, console, out=out, label=f" at {REALISTIC_COSTS} costs")


def _backtest_reports(
    cfg: RunConfig,
    loader: Any,
    heldout: list[Any],
    result: Any,
    maml_policy: Policy,
    ppo_policy: Policy,
    console: Any,
) -> dict[str, Any]:
    """Whole-test-split backtest reports of MAML and PPO adapted with k = max steps on
    every held-out task (the first task's report printed)."""
    run_dir = cfg.run_dir()
    k = max(cfg.evaluation.adaptation_steps)
    console.print(f"\n[bold]4/4 backtests of the adapted policies (k={k}) on the test split[/bold]")
    env_cfg = build.make_env_config(cfg)
    reports: dict[str, Any] = {}
    for i, task in enumerate(heldout):
        arrays = loader.get_task_arrays(*task)
        for label, start_policy in (("MAML", maml_policy), ("PPO", ppo_policy)):
            adapted = result.adapted.get((label, k))
            if adapted is None:
                continue
            out = run_dir / "reports" / f"{task.instrument}_{task.timeframe}" / label.lower()
            reports[f"{task}/{label}"] = commands.backtest_and_report(
                (start_policy, {n: v[i] for n, v in adapted.items()}),
                arrays,
                out,
                stress_bps=cfg.evaluation.stress_cost_bps,
                echo=False,
                split="test",
                config=env_cfg,
                name=f"{label} adapted k={k}",
                note=None if result.period is None else _backtest_note(result.period),
            )
            if i == 0:
                console.print(reports[f"{task}/{label}"]["report"], soft_wrap=True)
    console.print(
        f"reports, trade lists and equity plots for all {len(heldout)} held-out task(s): "
        f"{run_dir / 'reports'}"
    )
    return reports


def _backtest_note(period: Any) -> str:
    """The backtests trade the adapted policies of the meta-test's look: they state that
    look's number, and say that they belong to it (the statutory-cost table is a later one)."""
    return f"{period.describe()}; these backtests trade that look's adapted policies"


def _stamp(run_dir: Path) -> None:
    """Each result folder's provenance: the run id and the content hashes (``artefacts``)."""
    from metatrade.training.artefacts import RESULT_DIRS, resolve_run, stamp_results

    run = resolve_run(run_dir)
    for name in RESULT_DIRS:
        if (Path(run_dir) / name).is_dir():
            stamp_results(Path(run_dir) / name, run)
