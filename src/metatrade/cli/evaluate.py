"""``metatrade evaluate | adapt | backtest``: a meta-training run on held-out tasks.

Each reads the run's own config from its checkpoint, refuses a task the run trained on
(unless ``--allow-seen``), and writes its results beside the run (or under ``--out``)
without replacing an earlier result unless ``--overwrite``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from metatrade.cli import app
from metatrade.cli.common import (
    AllowSeenOpt,
    CheckpointOpt,
    DataOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    StepsOpt,
    TasksOpt,
    _fresh_output,
    _load_run,
    _output_dir,
    _steps,
    _writing,
    cli_errors,
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


@app.command("evaluate")
@cli_errors
def evaluate_cmd(
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
    overwrite: bool = OverwriteOpt,
    fmt: Format = FormatOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Meta-test: adapt MAML / PPO / random init on held-out tasks (k = 0..3) vs baselines.
    The run's own config (stored in the checkpoint) sets everything else."""
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
            **run.kwargs,
        )
        stamp_results(run_dir / "eval", run.artefacts)
    if fmt != Format.table:  # the table itself was printed above, with its intervals
        emit([r.as_dict() for r in result.rows], fmt)


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
    split: str = typer.Option(
        "test", "--split", help="time split to backtest: train/validation/test"
    ),
    allow_seen: bool = AllowSeenOpt,
    overwrite: bool = OverwriteOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Backtest the (optionally adapted) meta-policy over a whole split of each task (the
    report per task; --format csv/json: its metrics, a row per task and cost setting)."""
    from metatrade.training.artefacts import stamp_results
    from metatrade.training.commands import backtest_tasks

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
            **run.kwargs,
        )
        stamp_results(run_dir / "reports", run.artefacts)
    if fmt != Format.table:
        emit(
            [
                {"task": task, "costs": costs, **values}
                for task, report in results.items()
                for costs, values in report["metrics"].items()
            ],
            fmt,
        )
