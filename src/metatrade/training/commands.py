"""The bodies of ``metatrade adapt``, ``backtest`` and ``evaluate`` (and the demo's meta-test):
load what the run config names, adapt, backtest or evaluate, print and write the results.
The factories they use are in ``training.build`` and ``training.task_sets``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metatrade.seeding import derive_seed
from metatrade.training.build import (
    check_ppo_fits,
    load_ppo_agent,
    make_env_config,
    make_protocol_config,
)
from metatrade.training.config import RunConfig
from metatrade.training.task_sets import check_unseen, eval_tasks, make_loader
from metatrade.training.trials import open_evaluation, record_evaluation, trial_log

if TYPE_CHECKING:
    from rich.console import Console

    from metatrade.agents.networks.base import Policy
    from metatrade.agents.ppo import PPOAgent
    from metatrade.data.task_arrays import TaskId
    from metatrade.evaluation.protocol import EvaluationResult


def adapt_params(
    cfg: RunConfig,
    policy: Policy,
    tasks: list[TaskId],
    arrays: list[Any],
    steps: int,
    inner_lrs: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The meta-policy adapted to ``tasks`` with ``steps`` inner steps exactly as
    ``evaluate`` adapts its MAML row (``MetaTestProtocol.adapt``: the same adaptation data,
    episodes per step, streams and Meta-SGD step sizes ``inner_lrs``), so ``backtest -k K``
    backtests the parameters ``evaluate``'s MAML k = K row backtests. Returns per-task params
    [T, ...] and the mean return on the adaptation data after k = 0..steps steps (the exact
    estimator: minus the exact loss)."""

    from metatrade.evaluation.protocol import MetaTestProtocol, Start, module_params

    protocol_cfg = replace(make_protocol_config(cfg, tasks), adaptation_steps=(steps,))
    start = Start(policy, module_params(policy), inner_lrs)
    snapshots, curve = MetaTestProtocol(protocol_cfg).adapt("MAML", start, arrays)
    return snapshots[steps], curve


def warn_seen(console: Console, seen: list[str]) -> None:
    """The loud line ``--allow-seen`` prints for tasks the run meta-trained on."""
    if seen:
        console.print(
            f"[bold red]WARNING:[/bold red] {', '.join(seen)} were meta-training tasks of "
            "this run (--allow-seen): their results measure memory, not adaptation"
        )


def adapt_to_tasks(
    cfg: RunConfig,
    policy: Policy,
    run_dir: Path,
    steps: int,
    console: Console | None = None,
    *,
    trained: Collection[str] | None = None,
    allow_seen: bool = False,
    inner_lrs: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """``metatrade adapt``: adapt to each held-out task on its adaptation window (train
    split) and save the adapted parameters to ``<run_dir>/adapted/<task>.pt``. ``trained``,
    ``allow_seen``: see ``eval_tasks``; ``inner_lrs``: the run's Meta-SGD step sizes."""
    from metatrade.agents.checkpoint import save_checkpoint

    loader = make_loader(cfg)
    tasks = eval_tasks(cfg, loader, trained=trained, allow_seen=allow_seen)
    seen = check_unseen(tasks, trained, allow_seen=True)
    arrays = [loader.get_task_arrays(*t) for t in tasks]
    params, returns = adapt_params(cfg, policy, tasks, arrays, steps, inner_lrs=inner_lrs)
    out: dict[str, Any] = {"returns": returns, "files": []}
    for i, task in enumerate(tasks):
        state = {"params": {k: v[i].clone() for k, v in params.items()}}
        path = save_checkpoint(
            run_dir / "adapted" / f"{task.instrument}_{task.timeframe}.pt",
            "AdaptedPolicy",
            {**cfg.to_dict(), "task": str(task), "steps": steps, "seen": str(task) in seen},
            state,
        )
        out["files"].append(str(path))
    if console is not None:
        warn_seen(console, seen)
        curve = "  ".join(f"k={k}: {r:.4g}" for k, r in enumerate(returns))
        console.print(f"adapted {len(tasks)} task(s) with {steps} step(s); mean return {curve}")
        console.print(f"adapted parameters in {run_dir / 'adapted'}")
    return out


def backtest_tasks(
    cfg: RunConfig,
    policy: Policy,
    run_dir: Path,
    steps: int,
    split: str,
    console: Console | None = None,
    echo: bool = True,
    *,
    trained: Collection[str] | None = None,
    allow_seen: bool = False,
    inner_lrs: dict[str, torch.Tensor] | None = None,
    final: bool = False,
    command: str = "metatrade backtest",
) -> dict[str, Any]:
    """``metatrade backtest``: adapt with ``steps`` inner steps (0 = the meta-policy), then
    backtest each held-out task over ``split``; reports under ``<run_dir>/reports/<task>``.
    ``trained``, ``allow_seen``, ``inner_lrs``: as in ``adapt_to_tasks``; the test split
    needs ``final`` (a recorded look, ``sealed.open_period``; ``command`` is recorded).
    Each report (and its ``period``) states the split and the looks at the test period."""
    loader = make_loader(cfg)
    tasks = eval_tasks(cfg, loader, trained=trained, allow_seen=allow_seen)
    seen = check_unseen(tasks, trained, allow_seen=True)
    arrays = [loader.get_task_arrays(*t) for t in tasks]
    period = open_evaluation(cfg, run_dir, arrays, split=split, final=final, command=command)
    if console is not None:
        warn_seen(console, seen)
    params, _ = adapt_params(cfg, policy, tasks, arrays, steps, inner_lrs=inner_lrs)
    env_cfg = make_env_config(cfg)
    results: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        own = {k: v[i] for k, v in params.items()}
        name = "MAML" if steps == 0 else f"MAML (k={steps})"
        if str(task) in seen:
            name += " [SEEN IN META-TRAINING]"
        results[str(task)] = backtest_and_report(
            (policy, own),
            arrays[i],
            run_dir / "reports" / f"{task.instrument}_{task.timeframe}",
            stress_bps=cfg.evaluation.stress_cost_bps,
            split=split,
            config=env_cfg,
            name=name,
            echo=echo,
            sample_seed=_backtest_seed(cfg, steps, str(task)),
            note=period.describe(),
        ) | {"period": period}
    if console is not None:
        console.print(f"backtest reports in {run_dir / 'reports'} ({period.describe()})")
    return results


def _backtest_seed(cfg: RunConfig, steps: int, task: str) -> int | None:
    """``evaluation.actions: sample``: the seed of one task's backtest draws, the one the
    meta-test protocol's backtest of row ``MAML@k<steps>`` uses (so both give the same
    figure); ``mode``: None."""
    from metatrade.evaluation.protocol_rollouts import backtest_seed

    if cfg.evaluation.actions == "mode":
        return None
    return backtest_seed(cfg.run.seed, f"MAML@k{steps}", task)


def backtest_and_report(
    agent: Any,
    env: Any,
    out_dir: str | Path | None,
    stress_bps: float,
    echo: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Delegate to ``metatrade.evaluation.report.backtest_and_report`` (temp dir if None)."""
    import tempfile

    from metatrade.evaluation.report import backtest_and_report as report

    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="metatrade-report-")
    return report(agent, env, out_dir, stress_bps=stress_bps, echo=echo, **kwargs)


def run_meta_test(
    cfg: RunConfig,
    policy: Policy,
    run_dir: Path,
    ppo_path: str | Path | None = None,
    ppo_agent: PPOAgent | None = None,
    console: Console | None = None,
    *,
    trained: Collection[str] | None = None,
    allow_seen: bool = False,
    inner_lrs: dict[str, torch.Tensor] | None = None,
    pretrained: dict[str, torch.Tensor] | None = None,
    final: bool = False,
    command: str = "metatrade evaluate",
) -> EvaluationResult:
    """``metatrade evaluate``: the meta-test protocol on the held-out tasks, scored on
    their validation split, or with ``final`` on their test split (a recorded look,
    ``sealed.open_period``; ``command`` is what the look records). Every policy row is a
    trial in the run's registry (``training.trials.record_evaluation``).

    Starts: the MAML meta-parameters (adapted with the run's Meta-SGD step sizes
    ``inner_lrs`` when it learned them), the multi-task PPO policy (``ppo_agent``, or the
    file ``ppo_path``) and a random initialisation, and with the exact estimator the
    multi-task start trained on the same objective (``pretrained``); reference rows per
    ``evaluation.baselines``. The caller finds the run's own baselines
    (``training.artefacts.resolve_run``): nothing is looked up in ``run_dir``, which is
    only where the results go. ``trained``/``allow_seen``:
    see ``eval_tasks``; seen tasks are flagged in the table. Prints the table and writes
    ``<run_dir>/eval/evaluation.{csv,json,txt}`` and ``evaluation_adaptation.png``.
    """
    from metatrade.evaluation.kinds import save_kinds_report
    from metatrade.evaluation.protocol import MetaTestProtocol

    loader = make_loader(cfg)
    tasks = eval_tasks(cfg, loader, trained=trained, allow_seen=allow_seen)
    seen = check_unseen(tasks, trained, allow_seen=True)
    first = loader.get_task_arrays(*tasks[0])
    starts = _meta_test_starts(
        cfg,
        policy,
        first,
        ppo_path=ppo_path,
        ppo_agent=ppo_agent,
        console=console,
        inner_lrs=inner_lrs,
        pretrained=pretrained,
    )
    split = "test" if final else "validation"
    arrays = [loader.get_task_arrays(*t) for t in tasks]
    period = open_evaluation(cfg, run_dir, arrays, split=split, final=final, command=command)
    protocol = replace(make_protocol_config(cfg, tasks), test_split=split)
    result = MetaTestProtocol(protocol).run(starts, tasks, loader)
    result.seen, result.period = seen, period
    log = trial_log(cfg, kind="evaluate", run=run_dir)
    record_evaluation(result, log, data_hash=period.data_hash, split=split)
    files = result.save(run_dir / "eval")
    by_kind = save_kinds_report(result, protocol.oracle, run_dir / "eval")
    if console is not None:
        _print_meta_test(console, result, tasks, split, files, by_kind=by_kind)
    return result


def _print_meta_test(
    console: Console,
    result: EvaluationResult,
    tasks: Sequence[Any],
    split: str,
    files: Mapping[str, Any],
    *,
    by_kind: Any = None,
) -> None:
    """The meta-test's table, the tasks it scored (seen ones warned about), the by-kind table
    of a regime-family run and its files."""
    warn_seen(console, result.seen)
    console.print(
        f"held-out tasks: {', '.join(str(t) for t in tasks)} ({split} split, out of sample)"
    )
    console.print(result.format_table(), soft_wrap=True)
    if by_kind is not None:
        console.print(by_kind, soft_wrap=True, highlight=False, markup=False)
    console.print(f"results: {files['csv']}, {files['json']}; plot: {files['plot']}")


def _meta_test_starts(
    cfg: RunConfig,
    policy: Policy,
    first_task: Any,
    *,
    ppo_path: str | Path | None,
    ppo_agent: PPOAgent | None,
    console: Console | None,
    inner_lrs: dict[str, torch.Tensor] | None,
    pretrained: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:
    """The starts ``evaluation.baselines`` asks for, of those the run has."""
    from metatrade.evaluation.protocol import Start, module_params, random_start

    wanted = set(cfg.evaluation.baselines)
    starts: dict[str, Any] = {}
    if "maml" in wanted:
        starts["MAML"] = Start(policy, module_params(policy), inner_lrs)
    if "ppo" in wanted:
        path = ppo_path
        if ppo_agent is None and path is not None:
            ppo_agent = load_ppo_agent(path)
        if ppo_agent is not None:
            check_ppo_fits(cfg, ppo_agent, first_task, path=path)
            starts["PPO"] = Start(ppo_agent.policy, module_params(ppo_agent.policy))
        elif console is not None:
            console.print("no PPO baseline (run `metatrade train` or pass --ppo); row skipped")
    if "pretrained" in wanted and pretrained is not None:
        starts["pretrained"] = Start(policy, pretrained)
    if "random" in wanted:
        starts["random"] = random_start(policy, seed=derive_seed(cfg.run.seed, "random start"))
    return starts
