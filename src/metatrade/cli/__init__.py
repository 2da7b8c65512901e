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


def _register() -> None:
    # Sub-command modules are imported lazily-tolerant: each adds itself to ``app``.
    import importlib

    for name in ("data", "run"):
        try:
            importlib.import_module(f"metatrade.cli.{name}")
        except ModuleNotFoundError as err:  # a layer not yet built
            if err.name != f"metatrade.cli.{name}":
                raise


_register()
