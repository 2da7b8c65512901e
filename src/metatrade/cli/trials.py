"""``metatrade trials``: list and filter the trial registry (every configuration scored on
a data set: what the deflated Sharpe ratio's N and PBO count) and its looks at test."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from metatrade.cli import app
from metatrade.cli.common import cli_errors
from metatrade.cli.output import Format, FormatOpt, chatter, emit
from metatrade.errors import UserError

if TYPE_CHECKING:
    from metatrade.evaluation.registry import Trial


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
    fmt: Format = FormatOpt,
) -> None:
    """List the trials of the registry, oldest first, then each data set's count of trials
    and looks at its test split (--format csv/json: a row per trial, every field)."""
    from metatrade.evaluation.registry import TrialRegistry

    if not Path(registry).is_file():
        raise UserError(f"{registry}: no trial registry here; pass --registry FILE")
    reg = TrialRegistry(registry)
    found = reg.trials(data_hash=data_hash, kind=kind, split=split, label=label, run=run)
    found = found[-last:] if last else found
    records = [_record(t, full=fmt != Format.table) for t in found]
    emit(records, fmt, title=f"{len(found)} trial(s) in {registry}")
    for h in sorted({t.data_hash for t in found}):
        looks = len(reg.looks(h, "test"))
        chatter(fmt).print(
            f"data set {h}: {reg.count_trials(h)} trial(s) in all, {looks} look(s) "
            "at its test split"
        )


def _record(t: Trial, *, full: bool) -> dict[str, Any]:
    """One trial as a row: short hashes and the Sharpe per period (a day for walk-forward
    and tune trials, a test window for evaluate's, an iteration for training's) for
    people; every field (metrics as a nested object) for programs."""
    if full:
        fields = ("id", "time", "kind", "run", "config_hash", "data_hash", "split", "seed")
        return {k: getattr(t, k) for k in (*fields, "label", "metrics")}
    return {
        "id": t.id,
        "time": t.time[:19],
        "kind": t.kind,
        "label": t.label,
        "split": t.split,
        "data": t.data_hash[:8],
        "config": t.config_hash[:8],
        "seed": t.seed,
        "Sharpe": "n/a" if t.sharpe != t.sharpe else f"{t.sharpe:+.4f}",
        "per": t.metrics.get("period", "day"),
        "obs": f"{t.metrics.get('n_obs', 0):.0f}",
        "run": t.run,
    }
