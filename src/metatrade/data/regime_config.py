"""``RegimesConfig``: the synthetic regime family's mixture weights and parameter ranges
(the run config's ``data.regimes`` section), validated once here, and how a task's
parameters are drawn from it (uniform in each range; integers inclusive).

Every range is ``[low, high]``; sizes are in units of the task's base innovation std sigma
so the kinds stay comparable whatever sigma is drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from metatrade.data.regime_kinds import KINDS

_STRICT = ConfigDict(extra="forbid")

KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "ar": ("phi", "lags"),
    "seasonal": ("drift",),
    "vol_ar": ("phi_low", "phi_high", "persistence", "vol_of_vol", "window"),
    "markov": ("phi", "switch_prob"),
    "gap": ("gap", "follow", "bars"),
    "noise": (),
}
"""the parameters each kind's ``TaskRule.params`` holds"""


def _check(name: str, rng: tuple[float, float], low: float, high: float) -> None:
    """``ValueError`` unless ``low <= rng[0] <= rng[1] <= high``."""
    if not (low <= rng[0] <= rng[1] <= high):
        raise ValueError(
            f"{name}={list(rng)}: give [low, high] with {low:g} <= low <= high <= {high:g}"
        )


@dataclass(frozen=True, config=_STRICT)
class ArRanges:
    """Momentum (phi > 0) and reversal (phi < 0) over the last h bars."""

    phi: tuple[float, float] = Field(default=(-0.4, 0.4), description="sum of the AR coefficients")
    lags: tuple[int, int] = Field(
        default=(1, 4), description="h: bars the coefficient spreads over"
    )

    @model_validator(mode="after")
    def _valid(self) -> ArRanges:
        _check("ar.phi", self.phi, -0.99, 0.99)
        _check("ar.lags", self.lags, 1, 64)
        return self


@dataclass(frozen=True, config=_STRICT)
class SeasonalRanges:
    """A drift per equal-width session bucket (random sign, size in the range)."""

    buckets: tuple[int, int] = Field(default=(2, 6), description="buckets the session is cut into")
    drift: tuple[float, float] = Field(default=(0.05, 0.3), description="|drift| per bar, x sigma")

    @model_validator(mode="after")
    def _valid(self) -> SeasonalRanges:
        _check("seasonal.buckets", self.buckets, 1, 75)
        _check("seasonal.drift", self.drift, 0.0, 10.0)
        return self


@dataclass(frozen=True, config=_STRICT)
class VolArRanges:
    """Autocorrelation phi_high when the last w bars' realised vol exceeds sigma, else
    phi_low; log-volatility an AR(1)."""

    phi_low: tuple[float, float] = Field(default=(-0.4, 0.4), description="phi in calm bars")
    phi_high: tuple[float, float] = Field(default=(-0.4, 0.4), description="phi in volatile bars")
    persistence: tuple[float, float] = Field(
        default=(0.97, 0.995), description="log-vol AR(1) coef"
    )
    vol_of_vol: tuple[float, float] = Field(default=(0.3, 0.6), description="std of log-volatility")
    window: tuple[int, int] = Field(default=(12, 48), description="bars of the realised volatility")

    @model_validator(mode="after")
    def _valid(self) -> VolArRanges:
        _check("vol_ar.phi_low", self.phi_low, -0.99, 0.99)
        _check("vol_ar.phi_high", self.phi_high, -0.99, 0.99)
        _check("vol_ar.persistence", self.persistence, 0.0, 0.9999)
        _check("vol_ar.vol_of_vol", self.vol_of_vol, 0.0, 3.0)
        _check("vol_ar.window", self.window, 2, 1000)
        return self


@dataclass(frozen=True, config=_STRICT)
class MarkovRanges:
    """A hidden Markov chain over ``states`` autocorrelation regimes."""

    phi: tuple[float, float] = Field(default=(-0.4, 0.4), description="phi of each hidden state")
    switch_prob: tuple[float, float] = Field(default=(0.005, 0.03), description="switches per bar")
    states: int = Field(default=2, ge=2, le=8, description="number of hidden states")

    @model_validator(mode="after")
    def _valid(self) -> MarkovRanges:
        _check("markov.phi", self.phi, -0.99, 0.99)
        _check("markov.switch_prob", self.switch_prob, 1e-6, 0.5)
        return self


@dataclass(frozen=True, config=_STRICT)
class GapRanges:
    """The m bars after a session's first bar drift by follow x (its overnight gap) / m."""

    gap: tuple[float, float] = Field(default=(4.0, 12.0), description="overnight gap std, x sigma")
    follow: tuple[float, float] = Field(
        default=(-1.0, 1.0), description="share of the gap continued (> 0) or faded (< 0)"
    )
    bars: tuple[int, int] = Field(default=(3, 12), description="m: bars the move spreads over")

    @model_validator(mode="after")
    def _valid(self) -> GapRanges:
        _check("gap.gap", self.gap, 0.0, 100.0)
        _check("gap.follow", self.follow, -5.0, 5.0)
        _check("gap.bars", self.bars, 1, 74)
        return self


@dataclass(frozen=True, config=_STRICT)
class RegimesConfig:
    """The synthetic regime family (``metatrade.data.regimes``): which kinds in which
    proportions, and each kind's parameter ranges."""

    weights: dict[str, float] = Field(
        default_factory=lambda: dict.fromkeys(KINDS, 1.0),
        description=f"mixture weight of each kind ({', '.join(KINDS)}); missing kinds: 0",
    )
    sigma: tuple[float, float] = Field(default=(5e-4, 2e-3), description="innovation std per bar")
    overnight_gap: tuple[float, float] = Field(
        default=(0.0, 3.0), description="std of the unpredictive overnight gaps (not gap), x sigma"
    )
    ar: ArRanges = Field(default_factory=ArRanges)
    seasonal: SeasonalRanges = Field(default_factory=SeasonalRanges)
    vol_ar: VolArRanges = Field(default_factory=VolArRanges)
    markov: MarkovRanges = Field(default_factory=MarkovRanges)
    gap: GapRanges = Field(default_factory=GapRanges)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown kind(s) {unknown}; use {list(KINDS)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError(f"weights {v}: give weights >= 0 with a positive sum")
        return v

    @model_validator(mode="after")
    def _valid(self) -> RegimesConfig:
        _check("sigma", self.sigma, 1e-8, 0.1)
        _check("overnight_gap", self.overnight_gap, 0.0, 100.0)
        return self


def draw_params(config: RegimesConfig, kind: str, rng: np.random.Generator) -> dict[str, Any]:
    """One task's parameters of ``kind``, uniform in the config's ranges (JSON-able)."""

    def u(r: tuple[float, float]) -> float:
        return float(rng.uniform(*r))

    def i(r: tuple[int, int]) -> int:
        return int(rng.integers(r[0], r[1] + 1))

    if kind == "ar":
        return {"phi": u(config.ar.phi), "lags": i(config.ar.lags)}
    if kind == "seasonal":
        n = i(config.seasonal.buckets)
        size = rng.uniform(*config.seasonal.drift, size=n) * rng.choice([-1.0, 1.0], size=n)
        return {"drift": [float(x) for x in size]}
    if kind == "vol_ar":
        c = config.vol_ar
        return {
            "phi_low": u(c.phi_low),
            "phi_high": u(c.phi_high),
            "persistence": u(c.persistence),
            "vol_of_vol": u(c.vol_of_vol),
            "window": i(c.window),
        }
    if kind == "markov":
        m = config.markov
        return {
            "phi": [u(m.phi) for _ in range(m.states)],
            "switch_prob": u(m.switch_prob),
        }
    if kind == "gap":
        g = config.gap
        return {"gap": u(g.gap), "follow": u(g.follow), "bars": i(g.bars)}
    if kind == "noise":
        return {}
    raise ValueError(f"kind={kind!r}: use one of {KINDS}")
