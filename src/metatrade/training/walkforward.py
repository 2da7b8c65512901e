"""From a run (``RunConfig`` + meta-policy) to the walk-forward meta-test and the next
signal: the glue ``metatrade walkforward``, ``metatrade signal`` and the demo share.

The adapter is the run's own inner loop (``meta`` section: step size, surrogate, discount,
baseline) with ``evaluation.adaptation_episodes`` episodes per step, so the walk-forward
adapts exactly as meta-training's inner loop did; only k and the windows are new knobs.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metatrade.seeding import derive_seed
from metatrade.training import build, task_sets
from metatrade.training.config import ConfigError, RunConfig
from metatrade.training.trials import open_evaluation, trial_log

if TYPE_CHECKING:
    from rich.console import Console

    from metatrade.agents.networks.base import Policy
    from metatrade.agents.ppo import PPOAgent
    from metatrade.evaluation.sealed import Period
    from metatrade.evaluation.walkforward import (
        Adapter,
        FoldSpec,
        WalkForwardConfig,
        WalkForwardResult,
        WalkForwardTask,
    )


DEMO_CONFIGURATIONS = 5
"""configurations of the demo's settings compared on validation outside a user's registry
(benchmarks/exact_trading.py: the exact and sampled estimators, then inner step sizes 1, 3
and 30 beside the 10 kept; docs/exact.md): the demo's walk-forward multiplies its DSR's N
by it"""


def fold_spec(
    fold: int | None = None,
    adapt: int | None = None,
    embargo: int = 0,
    *,
    unit: str = "days",
    normalisation: str = "expanding",
) -> FoldSpec:
    """Fold geometry; defaults one week (5 sessions) of folds after two weeks of adaptation."""
    from metatrade.evaluation.walkforward import FoldSpec

    return FoldSpec(
        fold_bars=fold if fold is not None else 5,
        adapt_bars=adapt if adapt is not None else 10,
        embargo=embargo,
        unit=unit,
        normalisation=normalisation,
    )


def make_adapter(cfg: RunConfig, steps: int) -> Adapter:
    """The run's inner loop (its ``meta`` settings and estimator) as a walk-forward
    ``Adapter``, with ``evaluation.adaptation_episodes`` episodes (or windows) per step."""
    from metatrade.evaluation.walkforward import InnerLoopAdapter

    adaptation = replace(
        build.make_meta_config(cfg), episodes_per_task=cfg.evaluation.adaptation_episodes
    )
    env = build.make_env_config(cfg)
    if adaptation.horizon is not None:
        env = env.with_overrides(episode_length=adaptation.horizon)
    return InnerLoopAdapter(env=env, adaptation=adaptation, objective=cfg.objective, steps=steps)


def make_config(cfg: RunConfig, spec: FoldSpec, **overrides: Any) -> WalkForwardConfig:
    from metatrade.evaluation.walkforward import WalkForwardConfig

    refs = tuple(b for b in ("buy_and_hold", "flat") if b in cfg.evaluation.baselines)
    values: dict[str, Any] = {
        "folds": spec,
        "env": build.make_env_config(cfg),
        "references": refs,
        "classical": build.classical_rows(cfg),
        "classical_settings": cfg.evaluation.classical,
        "bootstrap_samples": cfg.evaluation.bootstrap_samples,
        "seed": cfg.run.seed,
        "deterministic": cfg.evaluation.actions == "mode",
    }
    values.update(overrides)
    return WalkForwardConfig(**values)


def make_starts(
    cfg: RunConfig,
    policy: Policy,
    *,
    ppo_agent: PPOAgent | None = None,
    ppo_path: str | Path | None = None,
    pretrained: dict[str, torch.Tensor] | None = None,
    inner_lrs: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """MAML (with its learned Meta-SGD step sizes ``inner_lrs``, if any), pretrained and
    random starts, filtered by ``evaluation.baselines`` (random uses
    the same seed as ``evaluate``). Pretrained: the run's multi-task start on the exact
    objective (``pretrained``) when it has one, else the multi-task PPO policy."""
    from metatrade.evaluation.protocol import Start, module_params, random_start

    wanted = set(cfg.evaluation.baselines)
    starts: dict[str, Any] = {}
    if "maml" in wanted:
        starts["MAML"] = Start(policy, module_params(policy), inner_lrs)
    if "pretrained" in wanted and pretrained is not None:
        starts["pretrained"] = Start(policy, pretrained)
    elif "ppo" in wanted:
        agent = ppo_agent or (build.load_ppo_agent(ppo_path) if ppo_path else None)
        if agent is not None:
            starts["pretrained"] = Start(agent.policy, module_params(agent.policy))
    if "random" in wanted:
        starts["random"] = random_start(policy, seed=derive_seed(cfg.run.seed, "random start"))
    return starts


def sealed_tasks(
    tasks: list[WalkForwardTask], start: str | int, *, final: bool
) -> tuple[list[WalkForwardTask], str]:
    """The tasks a walk from ``start`` may read and the split(s) it scores ("validation",
    "test", "validation+test"). Without ``final`` every task is cut after its validation
    split (``cut_after``: no test bar is in memory) and a start in the test split is
    refused (``sealed.sealed_error``); with it the whole tasks."""
    from metatrade.evaluation.registry import covered_splits
    from metatrade.evaluation.sealed import sealed_error
    from metatrade.evaluation.walkforward import cut_after
    from metatrade.evaluation.walkforward.folds import resolve_start

    rows = [resolve_start(t.arrays, start) for t in tasks]
    if not final:
        late = [  # (a start past the file's end is make_folds' error, with the usable range)
            t
            for t, r in zip(tasks, rows, strict=True)
            if t.arrays.split_range("test")[0] <= r < len(t) - 1
        ]
        if late:
            raise sealed_error(
                "test", f"--from {start} starts in {late[0].arrays.task}'s test split"
            )
        tasks = [cut_after(t, "validation") for t in tasks]
    names: list[str] = []
    for t, row in zip(tasks, rows, strict=True):
        for name in covered_splits(t.arrays, row, len(t) - 1).split("+"):
            names += [] if name in names else [name]
    return tasks, "+".join(names)


def run_walkforward_eval(
    cfg: RunConfig,
    policy: Policy,
    out_dir: Path,
    *,
    spec: FoldSpec,
    steps: int = 1,
    ppo_agent: PPOAgent | None = None,
    ppo_path: str | Path | None = None,
    pretrained: dict[str, torch.Tensor] | None = None,
    inner_lrs: dict[str, torch.Tensor] | None = None,
    trained: Collection[str] | None = None,
    console: Console | None = None,
    final: bool = False,
    start: str | int | None = None,
    command: str = "metatrade walkforward",
    **overrides: Any,
) -> tuple[WalkForwardResult, dict[str, Path]]:
    """Walk forward on the run's held-out tasks (``trained``: the run's training tasks,
    refused) from ``start`` (default: validation, or with ``final`` the test split); writes
    the report into ``out_dir``. Without ``final`` the walk reads the validation split only
    (``sealed_tasks``); with it the test split is opened (a recorded look: ``command``)."""
    from metatrade.evaluation.walkforward import load_tasks, run_walkforward
    from metatrade.evaluation.walkforward.report import save_report

    loader = task_sets.make_loader(cfg)
    whole = load_tasks(loader, task_sets.eval_tasks(cfg, loader, trained=trained))
    first = start if start is not None else ("test" if final else "validation")
    tasks, split = sealed_tasks(whole, first, final=final)
    period = open_evaluation(
        cfg, out_dir, [t.arrays for t in whole], split=split, final=final, command=command
    )
    starts = make_starts(
        cfg,
        policy,
        ppo_agent=ppo_agent,
        ppo_path=ppo_path,
        pretrained=pretrained,
        inner_lrs=inner_lrs,
    )
    if not starts:
        raise ConfigError("evaluation.baselines names no start (maml, ppo, random)")
    result = run_walkforward(
        starts,
        tasks,
        make_adapter(cfg, steps),
        make_config(cfg, spec, start=first, **overrides),
        task_map=_task_map(cfg),
        trials=trial_log(cfg, kind="walkforward", run=out_dir),  # DSR's N, PBO: issue 21
        whole=whole,
    )
    result.period = period
    files = save_report(result, out_dir)
    if console is not None:
        _print_walk(console, result, files)
    return result, files


def _task_map(cfg: RunConfig) -> Any:
    """How the walk maps over tasks: one Ray task per held-out task with ``run.backend: ray``
    (docs/distributed.md), else None (in-process)."""
    if cfg.run.backend != "ray":
        return None
    from metatrade.distributed.fanout import ray_task_map

    return ray_task_map(address=cfg.run.address, workers=cfg.run.workers)


def _print_walk(console: Console, result: WalkForwardResult, files: dict[str, Path]) -> None:
    """The walk's table, the differences that say whether adapting beats what a desk does,
    and where the files are."""
    from metatrade.evaluation.walkforward.report import difference_lines, text_table

    console.print(text_table(result), soft_wrap=True, highlight=False)
    for line in difference_lines(result):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"CSV {files['csv']}; JSON {files['json']}")
    console.print(f"report: {files['html']}")


def signals(
    cfg: RunConfig,
    policy: Policy,
    *,
    spec: FoldSpec,
    steps: int = 1,
    start: str = "MAML",
    position: int = 0,
    ppo_path: str | Path | None = None,
    pretrained: dict[str, torch.Tensor] | None = None,
    inner_lrs: dict[str, torch.Tensor] | None = None,
    trained: Collection[str] | None = None,
    final: bool = False,
    command: str = "metatrade signal",
) -> tuple[list[Any], Period]:
    """``metatrade signal``: the next decision of ``start`` on every held-out task, and the
    period it read. Adapting on the latest bars reads the test split (the file's end), so
    it is a look: with ``final`` the decision after the file's last bar (recorded),
    without it the decision after the last validation bar (``sealed_tasks``: a check of
    the deployed path that reads no test bar)."""
    from metatrade.evaluation.walkforward import load_tasks
    from metatrade.evaluation.walkforward.signal import next_decision

    loader = task_sets.make_loader(cfg)
    whole = load_tasks(loader, task_sets.eval_tasks(cfg, loader, trained=trained))
    tasks = whole if final else sealed_tasks(whole, "validation", final=False)[0]
    period = open_evaluation(
        cfg,
        cfg.run_dir(),
        [t.arrays for t in whole],
        split="test" if final else "validation",
        final=final,
        command=command,
    )
    starts = make_starts(cfg, policy, ppo_path=ppo_path, pretrained=pretrained, inner_lrs=inner_lrs)
    if start not in starts:
        raise ConfigError(f"--start-policy {start!r}: available {sorted(starts)}")
    adapter = make_adapter(cfg, steps)
    env = build.make_env_config(cfg)
    decisions = [
        next_decision(
            t,
            start,
            starts[start],
            adapter,
            spec,
            lookback=cfg.env.lookback,
            seed=cfg.run.seed,
            position=position,
            account_dim=env.account_dim,
            features=env.features,
            actions=env.actions,
            sample=cfg.evaluation.actions == "sample",
        )
        for t in tasks
    ]
    return decisions, period


def demo_walkforward(
    cfg: RunConfig,
    policy: Policy,
    run_dir: Path,
    *,
    ppo_agent: PPOAgent | None = None,
    pretrained: dict[str, torch.Tensor] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """The demo's walk-forward step: default geometry (5-session folds after 10-session
    windows, k = 1, carry) over the held-out tasks' test split (``final``: a look), the
    DSR's N times ``DEMO_CONFIGURATIONS``; prints a one-screen summary and the report's
    path. Returns {"result", "files", "seconds"}."""
    import time

    t0 = time.perf_counter()
    result, files = run_walkforward_eval(
        cfg,
        policy,
        Path(run_dir) / "walkforward",
        spec=fold_spec(),
        steps=1,
        ppo_agent=ppo_agent,
        pretrained=pretrained,
        final=True,  # the demo's final report walks the test split: a recorded look
        command="metatrade demo",
        configurations=DEMO_CONFIGURATIONS,
    )
    seconds = time.perf_counter() - t0
    if console is not None:
        from metatrade.evaluation.walkforward.report import text_table

        p = result.pooled
        console.print(
            f"walk-forward on {len(result.tasks)} held-out task(s), {p.daily.shape[0]} trading "
            f"days: folds of 5 sessions, each start re-adapted (k=1) on the 10 sessions before"
        )
        console.print(text_table(result), soft_wrap=True, highlight=False)
        for name, d in list(p.differences.items())[:4]:
            s = d["sharpe"]
            console.print(f"  Sharpe {name}: {s.estimate:+.2f} [{s.low:+.2f}, {s.high:+.2f}]")
        console.print(f"DSR trials N = {p.trials['n_trials']:.0f}; walk-forward: {seconds:.0f} s")
        console.print(f"report: {files['html']}")
    return {"result": result, "files": files, "seconds": seconds}
