"""``metatrade evaluate | adapt | backtest``: a meta-training run on held-out tasks.

Each reads the run's own config from its checkpoint, refuses a task the run trained on
(unless ``--allow-seen``), and writes its results beside the run (or under ``--out``)
without replacing an earlier result unless ``--overwrite``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import typer

from metatrade.cli import app
from metatrade.cli.common import (
    SEEDED,
    AllowSeenOpt,
    CheckpointOpt,
    DataOpt,
    FinalOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    SeedsOpt,
    StepsOpt,
    TasksOpt,
    _fresh_output,
    _load_run,
    _output_dir,
    _steps,
    _writing,
    cli_errors,
    command_line,
    seeds_from,
)
from metatrade.cli.output import (
    Format,
    FormatOpt,
    ProgressOpt,
    chatter,
    console,
    emit,
    progress_bars,
)
from metatrade.errors import ConfigError


@app.command("evaluate", context_settings=SEEDED)
@cli_errors
def evaluate_cmd(
    ctx: typer.Context,
    checkpoint: Path = CheckpointOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    ppo: Path | None = typer.Option(
        None,
        "--ppo",
        help="PPO baseline agent file (default: the run's ppo/checkpoints/ppo.pt if any)",
    ),
    allow_seen: bool = AllowSeenOpt,
    final: bool = FinalOpt,
    seeds: str | None = SeedsOpt,
    overwrite: bool = OverwriteOpt,
    fmt: Format = FormatOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Meta-test: adapt MAML / PPO / random init on held-out tasks (k = 0..3) vs baselines,
    scored on their validation split (--final: the test split, a recorded look). The run's
    own config (stored in the checkpoint) sets everything else. --seeds 0 1 2: the runs
    <run>-seed<S>, each evaluated, then every row per seed and pooled (<run>-seeds/)."""
    seed_list = seeds_from(seeds, ctx, seed)
    evaluate = functools.partial(
        _evaluate_run,
        ppo=ppo,
        allow_seen=allow_seen,
        final=final,
        overwrite=overwrite,
        fmt=fmt,
        progress=progress,
    )
    if not seed_list:
        result = evaluate(checkpoint, data, tasks, seed, out)
        if fmt != Format.table:  # the table itself was printed above, with its intervals
            emit(result.records(), fmt)
        return
    from metatrade.evaluation.seeds import seed_rows
    from metatrade.training.multiseed import pooled_evaluation, seed_runs, seeds_dir

    runs = seed_runs(checkpoint, seed_list)
    results = {s: evaluate(run, data, tasks, None, None) for s, run in runs.items()}
    with _writing(seeds_dir(checkpoint, out)) as where:
        pools, files = pooled_evaluation(results, where, runs=runs)
    chatter(fmt).print(files["txt"].read_text(), soft_wrap=True, highlight=False)
    chatter(fmt).print(f"pooled over seeds: {files['csv']}, {files['json']}")
    if fmt != Format.table:
        emit(seed_rows(pools, scale=100), fmt, title="pooled over seeds (%)")


def _evaluate_run(
    checkpoint: Path,
    data: Path | None,
    tasks: str | None,
    seed: int | None,
    out: Path | None,
    *,
    ppo: Path | None,
    allow_seen: bool,
    final: bool,
    overwrite: bool,
    fmt: Format,
    progress: bool,
) -> Any:
    """``evaluate`` of one run: its results in ``<run>/eval`` (or ``--out``)."""
    from metatrade.training.artefacts import stamp_results
    from metatrade.training.commands import run_meta_test

    with _writing(_output_dir(checkpoint, out)) as run_dir, progress_bars(progress):
        cfg, policy, run_dir, run = _load_run(checkpoint, data, tasks, seed, out)
        _fresh_output(run_dir / "eval", overwrite=overwrite)  # (after the run is checked)
        result = run_meta_test(
            cfg,
            policy,
            run_dir,
            ppo_path=ppo or run.artefacts.ppo,
            console=chatter(fmt),
            allow_seen=allow_seen,
            pretrained=run.pretrained(),
            final=final,
            command=command_line("evaluate"),
            **run.kwargs,
        )
        stamp_results(run_dir / "eval", run.artefacts)
    return result


@app.command("adapt")
@cli_errors
def adapt_cmd(
    checkpoint: Path = CheckpointOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    steps: int | None = StepsOpt,
    allow_seen: bool = AllowSeenOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Adapt the meta-policy to each task with k inner steps on its adaptation window."""
    from metatrade.training.artefacts import stamp_results
    from metatrade.training.commands import adapt_to_tasks

    with _writing(_output_dir(checkpoint, out)) as run_dir:
        cfg, policy, run_dir, run = _load_run(checkpoint, data, tasks, seed, out)
        _fresh_output(run_dir / "adapted", overwrite=overwrite)  # (after the run is checked)
        k = _steps(cfg, steps)
        adapt_to_tasks(
            cfg, policy, run_dir, k, console=console, allow_seen=allow_seen, **run.kwargs
        )
        stamp_results(run_dir / "adapted", run.artefacts)


@app.command("backtest")
@cli_errors
def backtest_cmd(
    checkpoint: Path = CheckpointOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    steps: int | None = StepsOpt,
    split: str | None = typer.Option(
        None,
        "--split",
        help="time split to backtest: train, validation (default) or test (needs --final)",
    ),
    final: bool = FinalOpt,
    allow_seen: bool = AllowSeenOpt,
    overwrite: bool = OverwriteOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Backtest the (optionally adapted) meta-policy over a whole split of each task (the
    report per task, stating the split and the looks at the test period; --format
    csv/json: its metrics, a row per task and cost setting). The test split needs --final
    (alone, it means --split test)."""
    from metatrade.training.artefacts import stamp_results
    from metatrade.training.commands import backtest_tasks

    split = split or ("test" if final else "validation")
    if split not in ("train", "validation", "test"):
        raise ConfigError(f"--split: expected train, validation or test, got {split!r}")
    with _writing(_output_dir(checkpoint, out)) as run_dir:
        cfg, policy, run_dir, run = _load_run(checkpoint, data, tasks, seed, out)
        _fresh_output(run_dir / "reports", overwrite=overwrite)  # (after the run is checked)
        results = backtest_tasks(
            cfg,
            policy,
            run_dir,
            _steps(cfg, steps),
            split,
            console=chatter(fmt),
            echo=fmt == Format.table,
            allow_seen=allow_seen,
            final=final,
            command=command_line("backtest"),
            **run.kwargs,
        )
        stamp_results(run_dir / "reports", run.artefacts)
    if fmt != Format.table:
        emit(
            [
                {"task": task, "costs": costs, **values, **_looked(report["period"])}
                for task, report in results.items()
                for costs, values in report["metrics"].items()
            ],
            fmt,
        )


def _looked(period: Any) -> dict[str, Any]:
    """The split a row scored and the looks at the test period, for every CSV/JSON row."""
    return {"split": period.split, "test_looks": period.test_looks}
