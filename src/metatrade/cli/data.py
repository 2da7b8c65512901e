"""``metatrade data list|validate``: look at a data folder (the embedded sample by default)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from metatrade.cli import app
from metatrade.data.loader import SAMPLE_DIR, DataLoader
from metatrade.data.validation import DataValidationError, validate_folder

data_app = typer.Typer(help="Inspect and validate OHLCV data folders.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

DataOpt = typer.Option(
    None, "--data", help="folder of <INSTRUMENT>_<MINUTES>.csv|.parquet (default: embedded sample)"
)


def _fail(err: Exception) -> None:
    """Bad input ends with its message and exit code 1, never a traceback."""
    err_console.print(f"[red]error:[/red] {err}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@data_app.command("list")
def list_tasks(
    data: Path | None = DataOpt,
    tz: str = typer.Option("Asia/Kolkata", help="time zone of the dates shown"),
) -> None:
    """Tasks with bar counts, date ranges and train/validation/test sizes (rows after warm-up)."""
    try:
        loader = DataLoader(data, tz=tz)
        table = Table(title=f"tasks in {data or SAMPLE_DIR}")
        for col in ("task", "bars", "first", "last", "train", "validation", "test"):
            table.add_column(col, justify="left" if col in ("task", "first", "last") else "right")
        for task in loader.get_available_tasks():
            bars = loader.get_task_data(*task)
            arrays = loader.get_task_arrays(*task)
            sizes = [
                str(b - a) for a, b in (arrays.splits[k] for k in ("train", "validation", "test"))
            ]
            first, last = (pd.Timestamp(x).strftime("%Y-%m-%d") for x in bars.index[[0, -1]])
            table.add_row(str(task), str(len(bars)), first, last, *sizes)
    except (DataValidationError, ValueError, OSError) as err:
        _fail(err)
    console.print(table)
    console.print(f"{len(loader.get_available_tasks())} tasks")


@data_app.command("validate")
def validate(
    path: Path | None = typer.Argument(
        None, help="folder or file to check (default: embedded sample)"
    ),
    tz: str = typer.Option("Asia/Kolkata", help="time zone for naive ISO timestamps"),
) -> None:
    """Report every problem in every file (file, row, field, fix); exit 1 if any."""
    target = path or SAMPLE_DIR
    problems = validate_folder(target, tz=tz)
    if not problems:
        console.print(f"[green]OK[/green]: no problems in {target}")
        return
    table = Table(title=f"{len(problems)} problem(s) in {target}")
    for col in ("file", "row", "line", "field", "problem"):
        table.add_column(col, overflow="fold")
    for p in problems:
        table.add_row(
            p.file,
            "" if p.row is None else str(p.row),
            "" if p.line is None else str(p.line),
            p.field or "",
            p.message,
        )
    console.print(table)
    raise typer.Exit(1)


app.add_typer(data_app, name="data")
