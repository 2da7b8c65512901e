"""``metatrade tune``: choose settings with Optuna on the validation split (the body is
``metatrade.training.tune.run_tune``; docs/evaluation.md, "Tuning")."""

from __future__ import annotations

from pathlib import Path

import typer

from metatrade.cli import app
from metatrade.cli.common import (
    ConfigOpt,
    DataOpt,
    SeedOpt,
    StrictOpt,
    TasksOpt,
    _config,
    _run_name,
    _writing,
    cli_errors,
)
from metatrade.cli.output import console


@app.command("tune")
@cli_errors
def tune_cmd(
    config: str | None = ConfigOpt,
    n_trials: int | None = typer.Option(
        None, "--n-trials", min=1, help="Optuna trials (default: tune.n_trials)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="where best.yaml and tune.json go (default: runs/<name>-tune)"
    ),
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    strict: bool = StrictOpt,
) -> None:
    """Tune the config's search space (tune.space) on the held-out tasks' validation split;
    every trial lands in the trial registry; the best config is written as YAML."""
    from metatrade.training.tune import run_tune

    cfg = _run_name(_config(config, data, tasks, seed, None, strict=strict), config)
    out_dir = Path(out) if out is not None else Path("runs") / f"{cfg.run.name or 'tune'}-tune"
    with _writing(out_dir):
        res = run_tune(cfg, out_dir=out_dir, n_trials=n_trials, console=console)
    shown = ", ".join(f"{k}={v}" for k, v in res.best_params.items())
    console.print(f"study {res.study}: best Sharpe/day {res.best_value:+.4f} with {shown}")
    console.print(f"best config: {res.files['best']}; trials: {res.files['json']}")
