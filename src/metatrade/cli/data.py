"""``metatrade data list|validate``: look at a data folder (the embedded sample by default)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import typer

from metatrade.cli import app
from metatrade.cli.common import cli_errors
from metatrade.cli.output import Format, FormatOpt, chatter, emit, records_table
from metatrade.data.loader import SAMPLE_DIR, DataLoader
from metatrade.data.validation import Problem, session_gaps, validate_folder
from metatrade.errors import DataWarning, UserError

data_app = typer.Typer(help="Inspect and validate OHLCV data folders.", no_args_is_help=True)
SPLITS = ("train", "validation", "test")

DataOpt = typer.Option(
    None,
    "--data",
    help="folder of <INSTRUMENT>_<TIMEFRAME>.csv|.parquet and its instruments.yaml "
    "(default: embedded sample)",
)
LookbackOpt = typer.Option(
    32, "--lookback", min=1, help="observation window (env.lookback): shorter files are unusable"
)


def _task_records(loader: DataLoader) -> tuple[list[dict[str, Any]], list[str]]:
    """A record per usable task, and a warning line per gap of many sessions."""
    records: list[dict[str, Any]] = []
    gaps: list[str] = []
    for task in loader.get_available_tasks():
        bars = loader.get_task_data(*task)
        splits = loader.get_task_arrays(*task).splits
        first, last = (pd.Timestamp(x).strftime("%Y-%m-%d") for x in bars.index[[0, -1]])
        inst = loader.instrument(task.instrument)
        records.append(
            {"task": str(task), "bars": len(bars), "first": first, "last": last}
            | {k: b - a for k, (a, b) in ((k, splits[k]) for k in SPLITS)}
        )
        gaps += [
            f"{task}: {n} {inst.calendar.describe()} sessions without a bar between {a} and "
            f"{b} (fine if the exchange was closed anyway: a halt, an unscheduled closure; "
            "else missing bars: `metatrade data validate`)"
            for a, b, n in session_gaps(bars.index, inst, task.timeframe)
        ]
    return records, gaps


def _market_records(loader: DataLoader) -> list[dict[str, Any]]:
    """One record per instrument: how its bars are read (calendar, zone, currency, costs)."""
    out: list[dict[str, Any]] = []
    for name in sorted({t.instrument for t in loader.get_available_tasks()}):
        inst = loader.instrument(name)
        out.append(
            {"instrument": name, "calendar": inst.calendar.describe(), "time zone": inst.timezone}
            | {"currency": inst.currency, "costs": inst.cost_name}
            | {"lot": inst.lot_size.describe(), "square-off": inst.square_off}
        )
    return out


@data_app.command("list")
@cli_errors
def list_tasks(
    data: Path | None = DataOpt,
    tz: str | None = typer.Option(
        None, help="time zone of every instrument (default: each one's, instruments.yaml)"
    ),
    lookback: int = LookbackOpt,
    strict: bool = typer.Option(
        False, "--strict", help="fail on any unusable file instead of listing it as skipped"
    ),
    fmt: Format = FormatOpt,
) -> None:
    """Tasks with bar counts, date ranges and train/validation/test sizes (rows after warm-up);
    files that cannot be used are listed as skipped with the reason (with --strict: an
    error, exit 2, as every bad input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # shown below as a table
        loader = DataLoader(data, tz=tz, strict=strict, lookback=lookback)
        records, gaps = _task_records(loader)
    emit(records, fmt, title=f"tasks in {data or SAMPLE_DIR}")
    other = chatter(fmt)
    other.print(f"{len(records)} tasks")
    markets = _market_records(loader)
    other.print(records_table(markets, title="markets (instruments.yaml; docs/data.md)"))
    if loader.skipped:
        skipped = [{"file": name, "reason": why} for name, why in loader.skipped.items()]
        title = f"{len(loader.skipped)} file(s) skipped (fix them or use --strict)"
        other.print(records_table(skipped, title=title))
    for line in gaps:
        other.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)


@data_app.command("validate")
@cli_errors
def validate(
    path: Path | None = typer.Argument(
        None, help="folder or file to check (default: --data, else the embedded sample)"
    ),
    data: Path | None = DataOpt,
    tz: str | None = typer.Option(
        None, help="time zone of naive timestamps (default: each instrument's, instruments.yaml)"
    ),
    lookback: int = LookbackOpt,
    fmt: Format = FormatOpt,
) -> None:
    """Report every problem in every file (file, row, field, fix); exit 1 if any error, like
    a linter (warnings, e.g. a gap of many sessions, are shown but do not fail)."""
    if path is not None and data is not None and path != data:
        raise UserError(f"give the folder once: {path} or --data {data}")
    target = path or data or SAMPLE_DIR
    problems = validate_folder(target, tz=tz, lookback=lookback)
    errors = [p for p in problems if p.level == "error"]
    if problems or fmt != Format.table:
        title = f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s) in {target}"
        emit([_problem_record(p) for p in problems], fmt, title=title)
    if errors:
        raise typer.Exit(1)
    warned = f" ({len(problems)} warning(s))" if problems else ""
    what = "errors" if problems else "problems"
    chatter(fmt).print(f"[green]OK[/green]: no {what} in {target}{warned}")


def _problem_record(p: Problem) -> dict[str, Any]:
    return {
        "file": p.file,
        "row": p.row,
        "line": p.line,
        "field": p.field,
        "level": p.level,
        "problem": p.message,
    }


app.add_typer(data_app, name="data")
