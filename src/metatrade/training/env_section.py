"""The run configuration's ``env`` section: ``metatrade.market.config.EnvSettings`` (the market
every task trades in: costs, shaping, observation, action space, features; each field
defined and validated there once) plus the entry size. ``docs/configuration.md`` is the
reference."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from metatrade.market.config import EnvSettings
from metatrade.training.sections import STRICT


@pydantic_dataclass(frozen=True, config=STRICT)
class EnvSection(EnvSettings):
    """The simulated market: ``EnvSettings`` (``costs`` a ``CostModel``, a preset name or
    terms; ``shaping`` the ``RewardShaping``), here with finite numbers only, an episode
    length and feature names a loader computes, plus the ``FixedFractionSizer``'s fraction."""

    episode_length: int = Field(
        default=256, gt=0, description="steps per training episode (a random window)"
    )
    position_fraction: float = Field(default=1.0, gt=0, description="fraction of equity per entry")

    @field_validator("episode_length", mode="before")
    @classmethod
    def _a_length(cls, v: Any) -> Any:
        """A run config trains on windows, so it needs a length (``EnvSettings`` allows null:
        code backtests whole splits with it)."""
        if v is None:
            raise ValueError("expected a number of bars per training episode, got null")
        return v

    @field_validator("features", mode="before")
    @classmethod
    def _groups(cls, v: Any) -> Any:
        """A group name (``next_sixth``) stands for all its columns, in registry order."""
        from metatrade.data.features import expand_feature_names

        if isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v):
            return tuple(expand_feature_names(v))
        return v

    @field_validator("features")
    @classmethod
    def _known_features(cls, v: Any) -> Any:
        from metatrade.data.features import check_feature_names

        check_feature_names(v)
        return v
