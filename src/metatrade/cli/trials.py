"""``metatrade trials``: list and filter the trial registry (every configuration scored on
a data set: what the deflated Sharpe ratio's N and PBO count) and its looks at test."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from metatrade.cli import app
from metatrade.cli.common import cli_errors, console
from metatrade.errors import UserError

if TYPE_CHECKING:
    from metatrade.evaluation.registry import Trial, TrialRegistry

_FIELDS = tuple(
    ["id", "time", "kind", "run", "config_hash", "data_hash", "split", "seed", "label", "metrics"]
)


@app.command("trials")
@cli_errors
def trials_cmd(
    registry: Path = typer.Option(
        Path("runs") / "trials.sqlite", "--registry", help="the registry file (run.registry)"
    ),
    data_hash: str | None = typer.Option(None, "--data-hash", help="only this data set"),
    kind: str | None = typer.Option(
        None, "--kind", help="meta-train, train, evaluate, walkforward or tune"
    ),
    split: str | None = typer.Option(None, "--split", help="only trials on this split"),
    label: str | None = typer.Option(None, "--label", help="only this configuration label"),
    run: str | None = typer.Option(None, "--run", help="only trials of this run directory"),
    last: int | None = typer.Option(None, "--last", min=1, help="only the last N trials"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per trial"),
) -> None:
    """List the trials of the registry, oldest first, and how many there are per data set."""
    from metatrade.evaluation.registry import TrialRegistry

    if not Path(registry).is_file():
        raise UserError(f"{registry}: no trial registry here; pass --registry FILE")
    reg = TrialRegistry(registry)
    found = reg.trials(data_hash=data_hash, kind=kind, split=split, label=label, run=run)
    found = found[-last:] if last else found
    if as_json:
        _print_json(found)
    else:
        _print_table(reg, found, registry)


def _print_json(found: list[Trial]) -> None:
    for t in found:
        doc = {k: getattr(t, k) for k in _FIELDS}
        console.print(json.dumps(doc), soft_wrap=True, highlight=False)


def _print_table(reg: TrialRegistry, found: list[Trial], registry: Path) -> None:
    """The trials as a table, then each data set's count of trials and looks at test."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(found)} trial(s) in {registry}")
    for col in (
        "id",
        "time",
        "kind",
        "label",
        "split",
        "data",
        "config",
        "seed",
        "Sharpe/day",
        "obs",
        "run",
    ):
        table.add_column(col)
    for t in found:
        sr = "n/a" if t.sharpe != t.sharpe else f"{t.sharpe:+.4f}"
        table.add_row(
            str(t.id),
            t.time[:19],
            t.kind,
            t.label,
            t.split,
            t.data_hash[:8],
            t.config_hash[:8],
            str(t.seed),
            sr,
            f"{t.metrics.get('n_obs', 0):.0f}",
            t.run,
        )
    wide = Console(width=max(console.width, 200), record=True, file=io.StringIO())
    wide.print(table)  # a pipe is 80 columns: render wide enough to keep every cell whole
    console.print(wide.export_text().rstrip(), soft_wrap=True, highlight=False)
    for h in sorted({t.data_hash for t in found}):
        looks = len(reg.looks(h, "test"))
        console.print(
            f"data set {h}: {reg.count_trials(h)} trial(s) in all, {looks} look(s) "
            "at its test split"
        )
