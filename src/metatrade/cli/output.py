"""What the commands print, and how: a console that never wraps off a terminal, the one
``--format table|csv|json`` option and the one renderer of tables (``emit``), and the
progress bars that show the library's progress stages (``metatrade.progress``) on stderr.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import io
import json
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.progress import Progress
from rich.table import Table

# Not printing to a terminal (a pipe, a file, a test), a table is as wide as its cells: a
# file name or a figure cut across lines is one grep misses.
PIPE_WIDTH = 100_000


class _Console(Console):
    """A rich console at the terminal's width, and never wrapping when not a terminal
    (whatever ``COLUMNS`` says: rich reads it once, at start-up); a ``width`` given here
    is kept."""

    def __init__(self, *args: Any, width: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, width=width, **kwargs)
        self._chosen_width = width

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._chosen_width is None and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(highlight=False, soft_wrap=True)
err_console = _Console(stderr=True, highlight=False, soft_wrap=True)


class Format(str, enum.Enum):
    """How a command prints its table: for people, or for programs."""

    table = "table"
    csv = "csv"
    json = "json"


FormatOpt = typer.Option(
    Format.table,
    "--format",
    help="table (for people), csv or json (for programs: the table alone on stdout, "
    "everything else on stderr)",
)

ProgressOpt = typer.Option(
    True, "--progress/--no-progress", help="progress bars on stderr (only on a terminal)"
)


class _Bars:
    """``metatrade.progress.Listener`` as rich bars: one per stage, removed when it ends."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars

    def start(self, description: str, total: int) -> Any:
        return self.bars.add_task(description, total=total, detail="")

    def advance(self, handle: Any, detail: str | None) -> None:
        self.bars.update(handle, advance=1, detail=detail or "")

    def stop(self, handle: Any) -> None:
        self.bars.remove_task(handle)


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Show the library's progress stages (``metatrade.progress``) as bars on stderr while
    the block runs: only on a terminal (a pipe or a log file gets none) and ``enabled``."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from metatrade import progress

    if not (enabled and err_console.is_terminal):
        yield
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    bars = Progress(*columns, console=err_console, transient=True)
    with bars, progress.listen(_Bars(bars)):
        yield


def chatter(fmt: Format) -> Console:
    """Where a command's other lines go: stdout beside a table, stderr beside CSV / JSON (so
    stdout holds nothing but the data)."""
    return console if fmt == Format.table else err_console


def emit(
    records: list[dict[str, Any]],
    fmt: Format,
    *,
    title: str | None = None,
    table: Table | None = None,
) -> None:
    """Print one table, the one renderer every table command uses: a rich table on stdout
    (``table``, or one built from ``records``: a column per key), or ``records`` as CSV (a
    header, then a row each) or JSON (a list of objects; NaN and infinities as null)."""
    from metatrade.io import json_safe

    if fmt == Format.json:
        typer.echo(json.dumps(json_safe(records), indent=1))
    elif fmt == Format.csv:
        columns = list(dict.fromkeys(k for r in records for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        typer.echo(buf.getvalue(), nl=False)
    else:
        console.print(table if table is not None else records_table(records, title=title))


def records_table(records: list[dict[str, Any]], *, title: str | None = None) -> Table:
    """A rich table of ``records`` (a column per key; numbers right-aligned, floats 4 s.f.)."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    table = Table(title=title)
    numeric = {c: all(isinstance(r.get(c), int | float) for r in records) for c in columns}
    for c in columns:
        table.add_column(c, justify="right" if numeric[c] and records else "left")
    for r in records:
        table.add_row(*(_cell(r.get(c)) for c in columns))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
