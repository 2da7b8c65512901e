"""``metatrade runs``: the run directories under a folder with their key figures, or two
runs side by side (``--compare A B``); read by ``metatrade.training.runs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from metatrade.cli import app
from metatrade.cli.common import cli_errors
from metatrade.cli.output import Format, FormatOpt, chatter, emit
from metatrade.errors import UserError


@app.command("runs")
@cli_errors
def runs_cmd(
    root: Path = typer.Argument(Path("runs"), help="folder of run directories (or one run)"),
    compare: tuple[Path, Path] | None = typer.Option(
        None,
        "--compare",
        help="two run directories side by side: figures, then config keys that differ",
        metavar="RUN_A RUN_B",
    ),
    fmt: Format = FormatOpt,
) -> None:
    """Runs with their key figures: config, estimator, iterations done, held-out set, the
    baselines they have, the last evaluation's MAML k = 1 mean return and 95% interval,
    when first written. With --compare A B: two runs side by side."""
    from metatrade.training.checkpoint import checkpoint_path
    from metatrade.training.runs import compare_runs, find_runs, summarise_run

    if compare is not None:
        for run in compare:
            if not checkpoint_path(run).is_file():
                raise UserError(f"--compare {run}: not a run directory (no {checkpoint_path('')})")
        emit(compare_runs(*compare), fmt, title="runs compared")
        return
    records = [summarise_run(r) for r in find_runs(root)]
    emit(records, fmt, table=_table(records, title=f"runs in {root}"))
    if not records:
        chatter(fmt).print(f"no run directories in {root} (a run holds checkpoints/last.pt)")


def _table(records: list[dict[str, Any]], *, title: str) -> Table:
    """The listing for people: one row per run, baselines in one column, the MAML k = 1
    figure in percent with its interval (as ``evaluate`` prints it)."""
    table = Table(title=title)
    for col in (
        "run",
        "name",
        "estimator",
        "iterations",
        "held out",
        "baselines",
        "evaluated on",
        "MAML k=1 % [95% CI]",
        "created",
    ):
        table.add_column(col)
    for r in records:
        if "error" in r:
            table.add_row(r["run"], f"[red]{r['error']}[/red]")
            continue
        have = [k for k in ("ppo", "pretrained", "walkforward") if r[k]]
        mean, lo, hi = (r[f"maml_k1_{x}"] for x in ("mean", "ci_low", "ci_high"))
        figure = "" if mean is None else f"{100 * mean:+.3f} [{100 * lo:+.3f}, {100 * hi:+.3f}]"
        table.add_row(
            r["run"],
            r["name"],
            r["estimator"],
            r["iterations"],
            r["held_out"],
            ", ".join(have) or "none",
            r["evaluated"] or "",
            figure,
            r["created"],
        )
    return table
