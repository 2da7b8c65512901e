"""The sealed test split: selection (tuning, early stopping, choosing an estimator or a step
size) reads the validation split only; reading the test split is an explicit, final act
(``--final``), and every read of it is recorded in the trial registry as a look, so every
report can say how many times its test period has been looked at.

``open_split`` is the one door every evaluation entry point goes through before it scores
a split; ``open_period`` wraps it into the ``Period`` a report states (docs/evaluation.md,
"Trials, looks and overfitting").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metatrade.errors import UserError
from metatrade.evaluation.registry import TrialRegistry

SEALED = ("test",)
FINAL_FLAG = "--final"
DEFAULT_SPLIT = "validation"


class SealedSplitError(UserError):
    """A sealed split (test) was asked for without the flag that makes it a final act."""


def sealed_error(split: str = "test", what: str = "") -> SealedSplitError:
    """The one-line refusal of a sealed split read without ``--final`` (``what``: how the
    command asked for it, e.g. "--from 2024-03-01 is in the test split")."""
    lead = f"{what}: " if what else ""
    return SealedSplitError(
        f"{lead}the {split} split is sealed: selection reads validation only; pass "
        f"{FINAL_FLAG} to score it (each look is recorded)"
    )


def open_split(
    split: str,
    *,
    final: bool,
    registry: TrialRegistry | None,
    run: str | Path,
    command: str,
    data_hash: str,
) -> int:
    """Open ``split`` for scoring: every evaluation entry point calls this before it reads a
    split. A sealed split (test) is refused unless ``final`` (the ``--final`` flag), and
    each read of it is recorded as a look. Returns how many times the split has been looked
    at, this time included (0 for an unsealed split)."""
    if split not in SEALED:
        return 0
    if not final:
        raise sealed_error(split)
    if registry is None:
        raise ValueError(f"open_split({split!r}, final=True): a look needs a registry")
    registry.record_look(run=run, data_hash=data_hash, split=split, command=command)
    return len(registry.looks(data_hash, split))


@dataclass(frozen=True)
class Period:
    """What a report scored: ``split`` (e.g. "validation", "test", or "validation+test"
    for a walk-forward through both), whether it was a ``final`` act, the data set and how
    many times its test period has been looked at (``test_looks``: this look included)."""

    split: str
    final: bool
    data_hash: str
    test_looks: int

    def describe(self) -> str:
        """One line for a table: which split, and the looks at the test period."""
        if self.final:
            return (
                f"scored on the {self.split} split (final: look {self.test_looks} at this "
                f"data set's test period, recorded)"
            )
        return (
            f"scored on the {self.split} split; the test period is sealed (looked at "
            f"{self.test_looks} time(s) so far; {FINAL_FLAG} to score it)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "final": self.final,
            "data_hash": self.data_hash,
            "test_looks": self.test_looks,
        }


def open_period(
    split: str,
    *,
    final: bool,
    registry: TrialRegistry | None,
    run: str | Path,
    command: str,
    data_hash: str,
) -> Period:
    """``open_split`` for every split a report reads (``split``: one name, or names joined
    by "+"), then the ``Period`` it states. ``final`` with no sealed split among them is a
    contradiction (``SealedSplitError``): ``--final`` means "score the test period"."""
    names = split.split("+")
    if final and not set(names) & set(SEALED):
        raise SealedSplitError(
            f"{FINAL_FLAG} scores the test split; this command would score {split}: drop "
            f"{FINAL_FLAG}, or ask for the test split"
        )
    looks = 0
    for name in names:
        looks = max(
            looks,
            open_split(
                name, final=final, registry=registry, run=run, command=command, data_hash=data_hash
            ),
        )
    if not final and registry is not None:
        looks = len(registry.looks(data_hash, SEALED[0]))
    return Period(split, final, data_hash, looks)
