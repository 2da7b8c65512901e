"""``metatrade walkforward`` and ``metatrade signal``: the walk-forward meta-test of a run
on its held-out tasks (HTML report), and the next decision a deployed policy would make.

Fold geometry: ``--fold-bars F --adapt-bars W --embargo E`` in bars, or ``--fold-days``
/ ``--adapt-days`` (and the embargo) in sessions of each task's bars; default 5 and 10
sessions. See docs/evaluation.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from metatrade.cli import app
from metatrade.cli.common import (
    SEEDED,
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
from metatrade.cli.output import Format, FormatOpt, ProgressOpt, chatter, emit, progress_bars
from metatrade.training.config import ConfigError

FoldBarsOpt = typer.Option(None, "--fold-bars", min=1, help="bars per fold (cadence)")
AdaptBarsOpt = typer.Option(None, "--adapt-bars", min=2, help="bars of each adaptation window")
FoldDaysOpt = typer.Option(None, "--fold-days", min=1, help="sessions per fold (default 5)")
AdaptDaysOpt = typer.Option(None, "--adapt-days", min=1, help="sessions per window (default 10)")
EmbargoOpt = typer.Option(0, "--embargo", min=0, help="gap between window and fold (same unit)")
NormOpt = typer.Option(
    "expanding", "--normalisation", help="feature statistics: expanding (causal) or train-split"
)
# `--start` meant the first fold here and the start policy in `signal`: renamed to --from
# and --start-policy, the old spelling is an error that names the new one.
OldStartOpt = typer.Option(None, "--start", hidden=True)


def _renamed_start(old: str | None, new: str) -> None:
    if old is not None:
        raise ConfigError(
            f"--start {old!r}: renamed; use {new} (walkforward: --from, the first fold; "
            "signal: --start-policy, the start that decides)"
        )


PpoOpt = typer.Option(None, "--ppo", help="PPO baseline agent file (default: the run's, if any)")
CarryOpt = typer.Option(
    True, "--carry/--flatten", help="carry position and equity across folds, or flatten"
)
FromOpt = typer.Option(
    None,
    "--from",
    help="first fold: a split (validation, test), a row or a date (default: validation; "
    "with --final, test); a start in the test split needs --final",
)
SampledOpt = typer.Option(
    False, "--sampled", help="sample actions (default: the run's evaluation.actions)"
)
ConfigurationsOpt = typer.Option(
    1,
    "--configurations",
    min=1,
    help="configurations tried outside the trial registry (before it, or elsewhere): "
    "multiplies the DSR's N, which counts the registry's trials on the data set",
)
StartPolicyOpt = typer.Option(
    "MAML", "--start-policy", help="the start that decides: MAML, pretrained, random"
)
PositionOpt = typer.Option(
    "flat", "--position", help="current position assumption: flat, long or short"
)
SplitOpt = typer.Option(
    None,
    "--split",
    help="decide after the last bar of: validation (default: a check that reads no test "
    "bar) or test (the file's last bar, the live decision; needs --final)",
)


def _spec(fold_bars, adapt_bars, fold_days, adapt_days, embargo, normalisation) -> Any:
    from metatrade.training.walkforward import fold_spec

    bars = fold_bars is not None or adapt_bars is not None
    days = fold_days is not None or adapt_days is not None
    if bars and days:
        raise ConfigError(
            "give the fold geometry in bars (--fold-bars/--adapt-bars) or in "
            "days (--fold-days/--adapt-days), not both"
        )
    if bars:
        if fold_bars is None or adapt_bars is None:
            raise ConfigError("--fold-bars and --adapt-bars go together")
        return fold_spec(fold_bars, adapt_bars, embargo, unit="bars", normalisation=normalisation)
    return fold_spec(fold_days, adapt_days, embargo, unit="days", normalisation=normalisation)


@app.command("walkforward", context_settings=SEEDED)
@cli_errors
def walkforward_cmd(
    ctx: typer.Context,
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
    steps: int | None = StepsOpt,
    carry: bool = CarryOpt,
    first: str | None = FromOpt,
    old_start: str | None = OldStartOpt,
    sampled: bool = SampledOpt,
    configurations: int = ConfigurationsOpt,
    normalisation: str = NormOpt,
    ppo: Path | None = PpoOpt,
    final: bool = FinalOpt,
    seeds: str | None = SeedsOpt,
    fmt: Format = FormatOpt,
    progress: bool = ProgressOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Walk-forward meta-test: re-adapt every start before each fold, trade it, stitch.
    Walks the validation split (the tasks cut after it); --final walks the test split (a
    recorded look). Writes <run>/walkforward/ (or --out DIR), refusing to replace an earlier
    report unless --overwrite (--format csv/json: a row per scope, task or pooled, and
    start). --seeds 0 1 2: the runs <run>-seed<S>, each walked, then pooled (<run>-seeds/)."""
    from metatrade.evaluation.walkforward.folds import parse_start

    _renamed_start(old_start, f"--from {old_start}")
    seed_list = seeds_from(seeds, ctx, seed)
    walk = {
        "start": None if first is None else parse_start(first),
        "spec": _spec(fold_bars, adapt_bars, fold_days, adapt_days, embargo, normalisation),
        "steps": steps,
        "ppo": ppo,
        "final": final,
        "overwrite": overwrite,
        "fmt": fmt,
        "progress": progress,
        "carry": carry,
        **({"deterministic": False} if sampled else {}),
        "configurations": configurations,
    }
    if not seed_list:
        result = _walk_run(checkpoint, data, tasks, seed, out, **walk)
        if fmt != Format.table:  # the pooled table was printed above
            emit(result.rows(), fmt)
        return
    _walk_seeds(checkpoint, seed_list, data, tasks, out, walk)


def _walk_seeds(
    checkpoint: Path,
    seed_list: list[int],
    data: Path | None,
    tasks: str | None,
    out: Path | None,
    walk: dict[str, Any],
) -> None:
    """``walkforward --seeds``: each run <run>-seed<S> walked, then pooled (<run>-seeds/)."""
    from metatrade.evaluation.seeds import seed_rows
    from metatrade.training.multiseed import pooled_walkforward, seed_runs, seeds_dir

    fmt = walk["fmt"]
    runs = seed_runs(checkpoint, seed_list)
    results = {s: _walk_run(run, data, tasks, None, None, **walk) for s, run in runs.items()}
    with _writing(seeds_dir(checkpoint, out)) as where:
        pools, files = pooled_walkforward(results, where, runs=runs)
    chatter(fmt).print(files["txt"].read_text(), soft_wrap=True, highlight=False)
    chatter(fmt).print(f"pooled over seeds: {files['csv']}, {files['json']}")
    if fmt != Format.table:
        emit(seed_rows(pools), fmt, title="walk-forward Sharpe pooled over seeds")


def _walk_run(
    checkpoint: Path,
    data: Path | None,
    tasks: str | None,
    seed: int | None,
    out: Path | None,
    *,
    spec: Any,
    steps: int | None,
    ppo: Path | None,
    overwrite: bool,
    fmt: Format,
    progress: bool,
    **options: Any,
) -> Any:
    """``walkforward`` of one run: its report in ``<run>/walkforward`` (or ``--out``)."""
    from metatrade.training.artefacts import stamp_results
    from metatrade.training.walkforward import run_walkforward_eval

    with _writing(_output_dir(checkpoint, out)) as where, progress_bars(progress):
        out_dir = where if out is not None else where / "walkforward"
        cfg, policy, _, run = _load_run(checkpoint, data, tasks, seed, out)
        _fresh_output(out_dir, overwrite=overwrite)  # (after the run is checked)
        result, _ = run_walkforward_eval(
            cfg,
            policy,
            out_dir,
            spec=spec,
            steps=_steps(cfg, steps),
            ppo_path=ppo or run.artefacts.ppo,
            pretrained=run.pretrained(),
            inner_lrs=run.inner_lrs,
            trained=run.trained,
            console=chatter(fmt),
            command=command_line("walkforward"),
            **options,
        )
        stamp_results(out_dir, run.artefacts)
    return result


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
    steps: int | None = StepsOpt,
    start: str = StartPolicyOpt,
    old_start: str | None = OldStartOpt,
    position: str = PositionOpt,
    normalisation: str = NormOpt,
    ppo: Path | None = PpoOpt,
    split: str | None = SplitOpt,
    final: bool = FinalOpt,
    fmt: Format = FormatOpt,
) -> None:
    """The next decision per task: adapt on the latest window as a walk-forward fold does,
    then print the order for the bar after the last one (--format json: for a program).
    The latest bars are the test split's: the live decision needs --final (a recorded look);
    without it, the decision after the last validation bar."""
    from metatrade.training.walkforward import signals

    _renamed_start(old_start, f"--start-policy {old_start}")
    _check_signal_split(split or ("test" if final else "validation"), final)
    pos = {"flat": 0, "long": 1, "short": -1}.get(position)
    if pos is None:
        raise ConfigError(f"--position {position!r}: use flat, long or short")
    spec = _spec(fold_bars, adapt_bars, fold_days, adapt_days, embargo, normalisation)
    cfg, policy, _, run = _load_run(checkpoint, data, tasks, seed, None)
    steps = _steps(cfg, steps)
    out, period = signals(
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
        final=final,
        command=command_line("signal"),
    )
    title = (
        f"next decision ({start}, k={steps}, position assumed {position}) after the last "
        f"{period.split} bar; {period.describe()}"
    )
    emit([_signal_record(s, period) for s in out], fmt, title=title)


def _check_signal_split(split: str, final: bool) -> None:
    """``signal`` decides after validation's last bar, or with --final after the test's."""
    from metatrade.evaluation.sealed import sealed_error

    if split not in ("validation", "test"):
        raise ConfigError(f"--split {split!r}: use validation or test")
    if split == "test" and not final:
        raise sealed_error("test", "signal --split test")
    if split == "validation" and final:
        raise ConfigError(
            "--final decides at the file's last bar (the test split); drop --split validation"
        )


def _signal_record(s: Any, period: Any) -> dict[str, Any]:
    """One task's decision: its fields, the probabilities as ``p_<action>`` columns, the
    split it decided after and the looks at the test period."""
    record = s.as_dict()
    probabilities = record.pop("probabilities")
    looked = {"split": period.split, "test_looks": period.test_looks}
    return record | {f"p_{k}": v for k, v in probabilities.items()} | looked
