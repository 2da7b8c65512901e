"""Task names come from file names: ``<INSTRUMENT>_<TIMEFRAME>.csv|.parquet``.

The timeframe is the part after the *last* underscore, so instruments may contain
underscores: ``Bank_Nifty_5.csv`` is ``("Bank_Nifty", "5")``. A timeframe is

* whole minutes for intraday bars: ``Nifty_5.csv``, ``EURUSD_60.csv``;
* ``<N>D`` for bars of N sessions: ``SPX_1D.csv`` is one bar per trading session (daily);
* ``<N>W`` for bars of N weeks: ``SPX_1W.csv`` (weekly).

``INSTRUMENT`` and ``TIMEFRAME`` are the one definition of a task name: the loader parses
file names with them and ``--tasks`` / ``data.tasks`` (``Instrument:TF``) are checked with
them, so every task ``metatrade data list`` shows can be named (``Nifty-50:60``, ``SPX:1D``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from metatrade.data.task_arrays import TaskId

DATA_SUFFIXES = (".csv", ".parquet")
INSTRUMENT = r"[A-Za-z0-9][A-Za-z0-9_\-.]*"
"""An instrument: letters, digits, '_', '-', '.', starting with a letter or digit"""
TIMEFRAME = r"[1-9][0-9]*[DW]?"
"""A timeframe: the bar length in whole minutes, or N sessions (``1D``) or N weeks (``1W``)"""
_NAME = re.compile(rf"^(?P<instrument>{INSTRUMENT}?)_(?P<timeframe>{TIMEFRAME})$")
TASK_NAME = re.compile(rf"^(?P<instrument>{INSTRUMENT}):(?P<timeframe>{TIMEFRAME})$")
"""``Instrument:TF`` as ``--tasks`` and the config's task lists write a task"""

MINUTES_PER_UNIT = {"min": 1, "D": 1440, "W": 7 * 1440}
"""nominal minutes of one unit: a session counts as a calendar day, a week as seven"""


@dataclass(frozen=True)
class Timeframe:
    """A parsed timeframe: ``count`` bars of ``unit`` ("min", "D" sessions or "W" weeks)."""

    count: int
    unit: str

    @property
    def minutes(self) -> int:
        """Nominal bar length in minutes (``TaskArrays.bar_minutes``): 1D is 1440, 1W 10080."""
        return self.count * MINUTES_PER_UNIT[self.unit]

    @property
    def intraday(self) -> bool:
        return self.unit == "min"

    def __str__(self) -> str:
        return str(self.count) if self.unit == "min" else f"{self.count}{self.unit}"


def parse_timeframe(timeframe: str | int) -> Timeframe:
    """``Timeframe`` of ``"5"``, ``"1D"`` or ``"1W"`` (``ValueError`` otherwise)."""
    text = str(timeframe).strip()
    if not re.fullmatch(TIMEFRAME, text):
        raise ValueError(
            f"timeframe {timeframe!r}: use whole minutes (5, 60), N sessions (1D) or N weeks (1W)"
        )
    if text[-1] in "DW":
        return Timeframe(count=int(text[:-1]), unit=text[-1])
    return Timeframe(count=int(text), unit="min")


def timeframe_sort_key(timeframe: str) -> int:
    """Sort timeframes by bar length: 5 < 60 < 1D < 1W."""
    return parse_timeframe(timeframe).minutes


def parse_task_id(name: str) -> TaskId:
    """``TaskId`` of ``"Instrument:TF"`` (e.g. ``"Bank_Nifty:15"``), or ``ValueError``."""
    m = TASK_NAME.match(str(name).strip())
    if m is None:
        raise ValueError(
            f"expected a task as 'Instrument:TF' (e.g. 'Nifty:5' or 'SPX:1D'; instrument: "
            f"letters, digits, '_', '-', '.'; TF: bar minutes, or 1D / 1W), got {name!r}"
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
            f"{p.name}: file name does not parse as <INSTRUMENT>_<TIMEFRAME>{p.suffix}; "
            f"rename it, e.g. Nifty_5{p.suffix}, Bank_Nifty_15{p.suffix} or SPX_1D{p.suffix} "
            "(instrument: letters, digits, '_', '-', '.'; timeframe: bar length in whole "
            "minutes, 1D for daily bars, 1W for weekly bars)"
        )
    return TaskId(m["instrument"], m["timeframe"])


def data_files(folder: str | Path) -> list[Path]:
    """Candidate data files (``.csv``/``.parquet``) in ``folder``, sorted; other files ignored."""
    return sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
    )
