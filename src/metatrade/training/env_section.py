"""The run configuration's ``env`` section: the market every task trades in (costs, shaping,
observation, action space, features). Kept apart from ``sections`` so each module stays
small; ``docs/configuration.md`` is the reference."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from metatrade.training.sections import _Section


class CostsSection(_Section):
    """What one order costs (metatrade.market.costs.cost_model): a preset, explicit terms,
    or a preset with some terms replaced; a bare preset name is accepted for the section.
    Terms not given are 0 (or the preset's)."""

    preset: str | None = Field(
        None,
        description="origin, zero, nse_index_futures, nse_cash_intraday or bps "
        "(docs/market.md has each preset's source and date)",
    )
    entry_fee: float | None = Field(None, ge=0, description="money per entry order")
    exit_fee: float | None = Field(None, ge=0, description="money per exit order")
    proportional_bps: float | None = Field(None, ge=0, description="bps of notional, every order")
    buy_bps: float | None = Field(None, ge=0, description="bps of notional, buy orders only")
    sell_bps: float | None = Field(None, ge=0, description="bps of notional, sell orders only")
    slippage_bps: float | None = Field(
        None, ge=0, description="fill price moved against the trader, bps"
    )
    commission_bps: float | None = Field(None, ge=0, description="generic model: commission")
    half_spread_bps: float | None = Field(None, ge=0, description="generic model: half-spread")

    @model_validator(mode="before")
    @classmethod
    def _preset_name(cls, v: Any) -> Any:
        return {"preset": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _valid(self) -> CostsSection:
        self.cost_model()
        return self

    def cost_model(self) -> Any:
        """The ``CostModel`` these terms describe (``ValueError`` naming a bad one)."""
        from dataclasses import replace

        from metatrade.market.costs import cost_model

        terms = {k: v for k, v in self.model_dump().items() if v is not None and k != "preset"}
        if self.preset is None:
            return cost_model(terms or "zero")
        base = cost_model(self.preset)
        try:
            return replace(base, **terms) if terms else base
        except TypeError:
            raise ValueError(
                f"{sorted(terms)} cannot adjust preset {self.preset!r}: use CostModel's terms "
                "(entry_fee, exit_fee, proportional_bps, buy_bps, sell_bps, slippage_bps)"
            ) from None


class ShapingSection(_Section):
    """Reward shaping added to the P&L reward (metatrade.market.config.RewardShaping)."""

    invalid_action_penalty: float = Field(0.0, ge=0, description="per rejected action")
    losing_hold_penalty: float = Field(0.0, ge=0, description="per bar holding a losing position")
    winning_close_bonus: float = Field(0.0, ge=0, description="per close with net P&L > 0")
    drawdown_penalty: float = Field(0.0, ge=0, description="times the drawdown from peak equity")


class EnvSection(_Section):
    """The simulated market (metatrade.market.config.TradingEnvConfig)."""

    lookback: int = Field(32, gt=0, description="bars in the observation window")
    episode_length: int = Field(256, gt=0, description="bars per training episode")
    initial_capital: float = Field(
        1_000_000.0, gt=0, description="starting equity, in each instrument's currency"
    )
    square_off: bool = Field(
        False,
        description="close open positions at each session's end (instruments with "
        "square_off: session_end)",
    )
    ruin_fraction: float = Field(
        0.5, ge=0, lt=1, description="episode terminates below this fraction of capital"
    )
    position_fraction: float = Field(1.0, gt=0, description="fraction of equity per entry")
    observation: Literal["full", "position"] = Field(
        "full",
        description="account part of the observation: the 4 account values, or the position "
        "only (needed by meta.estimator: exact)",
    )
    actions: Literal["orders", "target"] = Field(
        "orders",
        description="action space: the five orders (a reversal takes two bars), or the next "
        "position short/flat/long (a reversal in one bar, both legs costed)",
    )
    features: list[str] | None = Field(
        None,
        description="feature columns observed, by name (metatrade.data.features."
        "available_features()) or by group (next_sixth: its six columns); null = the 22 "
        "standard features",
    )
    costs: CostsSection | None = Field(
        None,
        description="costs of every instrument: a preset name or terms; null = each "
        "instrument's own (instruments.yaml costs)",
    )
    shaping: ShapingSection = Field(default_factory=ShapingSection)

    @field_validator("features")
    @classmethod
    def _known_features(cls, v: list[str] | None) -> list[str] | None:
        from metatrade.data.features import check_feature_names, expand_feature_names

        v = None if v is None else expand_feature_names(v)  # a group names all its columns
        check_feature_names(v)
        return v
