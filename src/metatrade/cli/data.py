"""``metatrade data list|validate``: look at a data folder (the embedded sample by default)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from metatrade.cli import app
from metatrade.data.loader import SAMPLE_DIR, DataLoader
from metatrade.data.validation import Problem, session_gaps, validate_folder
from metatrade.errors import DataWarning, UserError

data_app = typer.Typer(help="Inspect and validate OHLCV data folders.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

DataOpt = typer.Option(
    None,
    "--data",
    help="folder of <INSTRUMENT>_<TIMEFRAME>.csv|.parquet and its instruments.yaml "
    "(default: embedded sample)",
)
LookbackOpt = typer.Option(
    32, "--lookback", min=1, help="observation window (env.lookback): shorter files are unusable"
)


def _fail(err: Exception) -> None:
    """Bad input ends with its message and exit code 1, never a traceback."""
    err_console.print(f"[red]error:[/red] {err}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _task_table(loader: DataLoader, title: str) -> tuple[Table, list[str]]:
    """The table of usable tasks, and a warning line per gap of many sessions."""
    table = Table(title=title)
    for col in ("task", "bars", "first", "last", "train", "validation", "test"):
        table.add_column(col, justify="left" if col in ("task", "first", "last") else "right")
    gaps: list[str] = []
    for task in loader.get_available_tasks():
        bars = loader.get_task_data(*task)
        arrays = loader.get_task_arrays(*task)
        sizes = [str(b - a) for a, b in (arrays.splits[k] for k in ("train", "validation", "test"))]
        first, last = (pd.Timestamp(x).strftime("%Y-%m-%d") for x in bars.index[[0, -1]])
        inst = loader.instrument(task.instrument)
        table.add_row(str(task), str(len(bars)), first, last, *sizes)
        gaps += [
            f"{task}: {n} {inst.calendar.describe()} sessions without a bar between {a} and {b}"
            for a, b, n in session_gaps(bars.index, inst, task.timeframe)
        ]
    return table, gaps


@data_app.command("list")
def list_tasks(
    data: Path | None = DataOpt,
    tz: str | None = typer.Option(
        None, help="time zone of every instrument (default: each one's, instruments.yaml)"
    ),
    lookback: int = LookbackOpt,
    strict: bool = typer.Option(
        False, "--strict", help="fail on any unusable file instead of listing it as skipped"
    ),
) -> None:
    """Tasks with bar counts, date ranges and train/validation/test sizes (rows after warm-up);
    files that cannot be used are listed as skipped with the reason (exit 1 with --strict)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # shown below as a table
            loader = DataLoader(data, tz=tz, strict=strict, lookback=lookback)
            table, gaps = _task_table(loader, f"tasks in {data or SAMPLE_DIR}")
    except (UserError, OSError) as err:
        _fail(err)
    console.print(table)
    console.print(f"{len(loader.get_available_tasks())} tasks")
    console.print(_market_table(loader))
    if loader.skipped:
        skipped = Table(title=f"{len(loader.skipped)} file(s) skipped (fix them or use --strict)")
        skipped.add_column("file")
        skipped.add_column("reason", overflow="fold")
        for name, why in loader.skipped.items():
            skipped.add_row(name, why)
        console.print(skipped)
    for line in gaps:
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)


@data_app.command("validate")
def validate(
    path: Path | None = typer.Argument(
        None, help="folder or file to check (default: --data, else the embedded sample)"
    ),
    data: Path | None = DataOpt,
    tz: str | None = typer.Option(
        None, help="time zone of naive timestamps (default: each instrument's, instruments.yaml)"
    ),
    lookback: int = LookbackOpt,
) -> None:
    """Report every problem in every file (file, row, field, fix); exit 1 if any error
    (warnings, e.g. a gap of many sessions, are shown but do not fail)."""
    if path is not None and data is not None and path != data:
        _fail(UserError(f"give the folder once: {path} or --data {data}"))
    target = path or data or SAMPLE_DIR
    problems = validate_folder(target, tz=tz, lookback=lookback)
    errors = [p for p in problems if p.level == "error"]
    if not problems:
        console.print(f"[green]OK[/green]: no problems in {target}")
        return
    console.print(_problem_table(problems, target))
    if errors:
        raise typer.Exit(1)
    console.print(f"[green]OK[/green]: no errors in {target} ({len(problems)} warning(s))")


def _market_table(loader: DataLoader) -> Table:
    """One row per instrument: how its bars are read (calendar, zone, currency, costs)."""
    table = Table(title="markets (instruments.yaml; docs/data.md)")
    for col in ("instrument", "calendar", "time zone", "currency", "costs", "lot", "square-off"):
        table.add_column(col, overflow="fold")
    for name in sorted({t.instrument for t in loader.get_available_tasks()}):
        inst = loader.instrument(name)
        table.add_row(
            name, inst.calendar.describe(), inst.timezone, inst.currency, inst.cost_name,
            inst.lot_size.describe(), inst.square_off,
        )  # fmt: skip
    return table


def _problem_table(problems: list[Problem], target: Path) -> Table:
    errors = sum(p.level == "error" for p in problems)
    table = Table(title=f"{errors} error(s), {len(problems) - errors} warning(s) in {target}")
    for col in ("file", "row", "line", "field", "level", "problem"):
        table.add_column(col, overflow="fold")
    for p in problems:
        table.add_row(
            p.file,
            "" if p.row is None else str(p.row),
            "" if p.line is None else str(p.line),
            p.field or "",
            p.level,
            p.message,
        )
    return table


app.add_typer(data_app, name="data")
