"""Task names come from file names: ``<INSTRUMENT>_<TIMEFRAME>.csv|.parquet``.

The timeframe is the bar length in minutes (digits only) and is the part after the *last*
underscore, so instruments may contain underscores: ``Bank_Nifty_5.csv`` is
``("Bank_Nifty", "5")``.

``INSTRUMENT`` and ``TIMEFRAME`` are the one definition of a task name: the loader parses
file names with them and ``--tasks`` / ``data.tasks`` (``Instrument:TF``) are checked with
them, so every task ``metatrade data list`` shows can be named (``Nifty-50:60``).
"""

from __future__ import annotations

import re
from pathlib import Path

from metatrade.data.task_arrays import TaskId

DATA_SUFFIXES = (".csv", ".parquet")
INSTRUMENT = r"[A-Za-z0-9][A-Za-z0-9_\-.]*"
"""An instrument: letters, digits, '_', '-', '.', starting with a letter or digit"""
TIMEFRAME = r"[1-9][0-9]*"
"""A timeframe: the bar length in whole minutes"""
_NAME = re.compile(rf"^(?P<instrument>{INSTRUMENT}?)_(?P<timeframe>{TIMEFRAME})$")
TASK_NAME = re.compile(rf"^(?P<instrument>{INSTRUMENT}):(?P<timeframe>{TIMEFRAME})$")
"""``Instrument:TF`` as ``--tasks`` and the config's task lists write a task"""


def parse_task_id(name: str) -> TaskId:
    """``TaskId`` of ``"Instrument:TF"`` (e.g. ``"Bank_Nifty:15"``), or ``ValueError``."""
    m = TASK_NAME.match(str(name).strip())
    if m is None:
        raise ValueError(
            f"expected a task as 'Instrument:TF' (e.g. 'Nifty:5'; instrument: letters, digits, "
            f"'_', '-', '.'; TF: bar minutes), got {name!r}"
        )
    return TaskId(m["instrument"], m["timeframe"])


def parse_task_name(path: str | Path) -> TaskId:
    """``TaskId`` of a data file, or ``ValueError`` saying how to rename it."""
    p = Path(path)
    if p.suffix.lower() not in DATA_SUFFIXES:
        raise ValueError(
            f"{p.name}: unsupported extension {p.suffix!r}; use .csv or .parquet (e.g. Nifty_5.csv)"
        )
    m = _NAME.match(p.stem)
    if m is None:
        raise ValueError(
            f"{p.name}: file name does not parse as <INSTRUMENT>_<MINUTES>{p.suffix}; "
            f"rename it, e.g. Nifty_5{p.suffix} or Bank_Nifty_15{p.suffix} "
            "(instrument: letters, digits, '_', '-', '.'; timeframe: bar length in whole minutes)"
        )
    return TaskId(m["instrument"], m["timeframe"])


def data_files(folder: str | Path) -> list[Path]:
    """Candidate data files (``.csv``/``.parquet``) in ``folder``, sorted; other files ignored."""
    return sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
    )
