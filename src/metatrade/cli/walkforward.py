"""``metatrade walkforward`` and ``metatrade signal``: the walk-forward meta-test of a run
on its held-out tasks (HTML report), and the next decision a deployed policy would make.

Fold geometry: ``--fold-bars F --adapt-bars W --embargo E`` in bars, or ``--fold-days``
/ ``--adapt-days`` (and the embargo) in sessions of each task's bars; default 5 and 10
sessions. See docs/evaluation.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from metatrade.cli import app
from metatrade.cli.common import (
    CheckpointOpt,
    DataOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    TasksOpt,
    _fresh_output,
    _load_run,
    _output_dir,
    _writing,
    cli_errors,
    console,
)
from metatrade.training.config import ConfigError

FoldBarsOpt = typer.Option(None, "--fold-bars", min=1, help="bars per fold (cadence)")
AdaptBarsOpt = typer.Option(None, "--adapt-bars", min=2, help="bars of each adaptation window")
FoldDaysOpt = typer.Option(None, "--fold-days", min=1, help="sessions per fold (default 5)")
AdaptDaysOpt = typer.Option(None, "--adapt-days", min=1, help="sessions per window (default 10)")
EmbargoOpt = typer.Option(0, "--embargo", min=0, help="gap between window and fold (same unit)")
StepsOpt = typer.Option(1, "--steps", "-k", min=0, help="inner steps before every fold")
NormOpt = typer.Option(
    "expanding", "--normalisation", help="feature statistics: expanding (causal) or train-split"
)
PpoOpt = typer.Option(None, "--ppo", help="PPO baseline agent file (default: the run's, if any)")


def _spec(fold_bars, adapt_bars, fold_days, adapt_days, embargo, normalisation) -> Any:
    from metatrade.training.walkforward import fold_spec

    bars = fold_bars is not None or adapt_bars is not None
    days = fold_days is not None or adapt_days is not None
    if bars and days:
        raise ConfigError("give the fold geometry in bars (--fold-bars/--adapt-bars) or in "
                          "days (--fold-days/--adapt-days), not both")  # fmt: skip
    if bars:
        if fold_bars is None or adapt_bars is None:
            raise ConfigError("--fold-bars and --adapt-bars go together")
        return fold_spec(fold_bars, adapt_bars, embargo, unit="bars", normalisation=normalisation)
    return fold_spec(fold_days, adapt_days, embargo, unit="days", normalisation=normalisation)


@app.command("walkforward")
@cli_errors
def walkforward_cmd(
    checkpoint: Path = CheckpointOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    fold_bars: int | None = FoldBarsOpt,
    adapt_bars: int | None = AdaptBarsOpt,
    fold_days: int | None = FoldDaysOpt,
    adapt_days: int | None = AdaptDaysOpt,
    embargo: int = EmbargoOpt,
    steps: int = StepsOpt,
    carry: bool = typer.Option(
        True, "--carry/--flatten", help="carry position and equity across folds, or flatten"
    ),
    start: str = typer.Option(
        "validation", "--start", help="first fold: a split (validation, test), a row or a date"
    ),
    sampled: bool = typer.Option(False, "--sampled", help="sample actions instead of the mode"),
    configurations: int = typer.Option(
        1, "--configurations", min=1, help="protocol configurations tried so far (DSR trials)"
    ),
    normalisation: str = NormOpt,
    ppo: Path | None = PpoOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Walk-forward meta-test: re-adapt every start before each fold, trade it, stitch.
    Writes <run>/walkforward/ (or --out DIR), refusing to replace an earlier report unless
    --overwrite."""
    from metatrade.training.artefacts import stamp_results
    from metatrade.training.walkforward import run_walkforward_eval

    spec = _spec(fold_bars, adapt_bars, fold_days, adapt_days, embargo, normalisation)
    with _writing(_output_dir(checkpoint, out)) as where:
        out_dir = where if out is not None else where / "walkforward"
        cfg, policy, _, run = _load_run(checkpoint, data, tasks, seed, out)
        _fresh_output(out_dir, overwrite=overwrite)  # (after the run is checked)
        first: str | int = int(start) if start.isdigit() else start
        run_walkforward_eval(
            cfg,
            policy,
            out_dir,
            spec=spec,
            steps=steps,
            ppo_path=ppo or run.artefacts.ppo,
            pretrained=run.pretrained(),
            inner_lrs=run.inner_lrs,
            trained=run.trained,
            console=console,
            carry=carry,
            start=first,
            deterministic=not sampled,
            configurations=configurations,
        )
        stamp_results(out_dir, run.artefacts)


@app.command("signal")
@cli_errors
def signal_cmd(
    checkpoint: Path = CheckpointOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    fold_bars: int | None = FoldBarsOpt,
    adapt_bars: int | None = AdaptBarsOpt,
    fold_days: int | None = FoldDaysOpt,
    adapt_days: int | None = AdaptDaysOpt,
    embargo: int = EmbargoOpt,
    steps: int = StepsOpt,
    start: str = typer.Option("MAML", "--start", help="which start: MAML, pretrained, random"),
    position: str = typer.Option(
        "flat", "--position", help="current position assumption: flat, long or short"
    ),
    normalisation: str = NormOpt,
    ppo: Path | None = PpoOpt,
) -> None:
    """The next decision per task: adapt on the latest window as a walk-forward fold does,
    then print the order for the bar after the last one (table, then one JSON line)."""
    from rich.table import Table

    from metatrade.training.walkforward import signals

    pos = {"flat": 0, "long": 1, "short": -1}.get(position)
    if pos is None:
        raise ConfigError(f"--position {position!r}: use flat, long or short")
    spec = _spec(fold_bars, adapt_bars, fold_days, adapt_days, embargo, normalisation)
    cfg, policy, _, run = _load_run(checkpoint, data, tasks, seed, None)
    out = signals(
        cfg,
        policy,
        spec=spec,
        steps=steps,
        start=start,
        position=pos,
        ppo_path=ppo or run.artefacts.ppo,
        pretrained=run.pretrained(),
        inner_lrs=run.inner_lrs,
        trained=run.trained,
    )
    table = Table(title=f"next decision ({start}, k={steps}, position assumed {position})")
    for col in ("task", "last bar", "order", *out[0].probabilities, "adapted on rows"):
        table.add_column(col)
    for s in out:
        probs = [f"{p:.3f}" for p in s.probabilities.values()]
        table.add_row(
            s.task, s.last_bar, s.order, *probs, f"[{s.adapt_rows[0]}, {s.adapt_rows[1]})"
        )
    console.print(table)
    console.print(json.dumps([s.as_dict() for s in out]), soft_wrap=True, highlight=False)
