"""The sealed test split: selection (tuning, early stopping, choosing an estimator or a step
size) reads the validation split only; reading the test split is an explicit, final act
(``--final``), and every read of it is recorded in the trial registry as a look, so every
report can say how many times its test period has been looked at.

``open_split`` is the one door every evaluation entry point goes through before it scores
a split (docs/evaluation.md, "Trials, looks and overfitting").
"""

from __future__ import annotations

from pathlib import Path

from metatrade.errors import UserError
from metatrade.evaluation.registry import TrialRegistry

SEALED = ("test",)
FINAL_FLAG = "--final"


class SealedSplitError(UserError):
    """A sealed split (test) was asked for without the flag that makes it a final act."""


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
        raise SealedSplitError(
            f"the {split} split is sealed: selection reads validation only; pass {FINAL_FLAG} "
            "to score it (each look is recorded)"
        )
    if registry is None:
        raise ValueError(f"open_split({split!r}, final=True): a look needs a registry")
    registry.record_look(run=run, data_hash=data_hash, split=split, command=command)
    return len(registry.looks(data_hash, split))
