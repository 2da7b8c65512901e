"""The exact objective's settings, defined once: the run config's ``objective`` section is
this class (``metatrade.training.sections.ObjectiveSection``)."""

from __future__ import annotations

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ObjectiveSettings:
    """How the exact expected-P&L objective scores a window batch (the run config's
    ``objective`` section). The window length is the env's ``episode_length``;
    the window counts are the meta config's ``episodes_per_task`` / ``num_evaluation_episodes``
    (training) and the evaluation's ``adaptation_episodes`` (test-time adaptation)."""

    normalize: bool = Field(
        default=True,
        description="divide a window's P&L by its causal volatility x bars (tasks alike)",
    )
    risk: float = Field(
        default=0.0, ge=0, description="> 0: subtract risk x Var(P&L) (mean-variance)"
    )
    gap_bars: int = Field(
        default=0,
        ge=0,
        description="bars between the adaptation windows and the evaluation windows",
    )
    vol_bars: int = Field(
        default=256, ge=2, description="bars of returns behind the causal volatility"
    )
