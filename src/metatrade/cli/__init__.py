"""The command line: thin; it parses and calls the layers below.

Each sub-command group lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="metatrade",
    help="Meta-learn trading agents (MAML for RL) on OHLCV tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


# Each sub-command module adds its commands to ``app`` on import (after ``app`` exists).
from metatrade.cli import data, evaluate, run, runs, trials, tune, walkforward  # noqa: E402, F401
