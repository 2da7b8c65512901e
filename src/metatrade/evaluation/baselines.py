"""Classical adaptive baselines: the simple rules a desk already uses, fitted on exactly the
bars a meta-learned start adapts on, then traded like any other row.

Every rule maps the closes (and, for time of day, the bar schedule) up to bar t to a target
position in {-1, 0, +1}, held from ``open[t+1]`` (the ``PositionRule`` convention of
``metatrade.evaluation.backtest``). Returns are close-to-close log returns
``r[t] = log(close[t] / close[t-1])``; what a position decided on bar t earns is about
``r[t+1]``.

* ``ar`` -- plug-in AR(p): least squares (no intercept) of ``r[t+1]`` on
  ``r[t], ..., r[t-p+1]`` over the adaptation rows; hold the sign of the predicted next return
  (the "fit phi, hold sign(phi_hat x last return)" rule for p = 1).
* ``momentum`` / ``reversal`` -- time-series momentum (Moskowitz, Ooi & Pedersen 2012) and
  short-term reversal (Lehmann 1990; Jegadeesh 1990): the sign (reversal: minus the sign) of
  the last h bars' return ``log(close[t] / close[t-h])``, h the horizon of
  ``ClassicalConfig.horizons`` with the best in-sample P&L.
* ``time_of_day`` -- intraday seasonality (Heston, Korajczyk & Sadka 2010): the mean next
  return by session bucket of the bar the position is held over (``session_buckets``), its
  sign held.
* ``classical_selected`` -- of the four above, the one with the best in-sample P&L: what a
  desk does. The row a meta-learned start has to beat.

In-sample P&L (what ``momentum``, ``reversal`` and ``classical_selected`` compare): each
candidate's positions computed from the adaptation rows alone (flat until a signal has its
history inside the window) are traded through the protocol's ledger
(``protocol_rollouts.rollout_returns`` on a ``BatchTradingEnv`` with ``liquidate_at_end``:
the env's costs, sizer, square-off and order rules, a position still open closed at the last row's close with the
exit cost) from the window's first row to its last: final equity / C0 - 1. Ties go to the
first candidate (``ar``, ``momentum``, ``reversal``, ``time_of_day``; shorter horizons
first). Fitting reads nothing outside the adaptation rows [lo, hi).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from metatrade.data.calendar import assign_sessions
from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation.backtest import PositionRule
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.market.config import TradingEnvConfig

CLASSICAL = ("ar", "momentum", "reversal", "time_of_day", "classical_selected")
"""config names of the classical rows (``evaluation.baselines``), in table order"""
SELECTED = "classical_selected"
SELECTED_LABEL = "classical-selected"
_MINUTE_NS = 60 * 10**9
Rows = tuple[int, int]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ClassicalConfig:
    """Settings of the classical rows (the run config's ``evaluation.classical`` is this
    class: each field defined and validated here once)."""

    ar_order: int = Field(default=1, gt=0, description="p of the plug-in AR(p) row")
    horizons: tuple[int, ...] = Field(
        default=(1, 2, 4, 8, 16, 32),
        description="momentum / reversal lookbacks (bars) tried on the adaptation window",
    )
    buckets: int = Field(
        default=6,
        gt=0,
        description="time-of-day buckets per trading session (6: about an hour each in a "
        "375-minute session)",
    )

    @field_validator("horizons")
    @classmethod
    def _positive_horizons(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or min(v) < 1:
            raise ValueError(f"expected a non-empty list of horizons >= 1 bar, got {list(v)}")
        return tuple(sorted(set(v)))


def label(name: str, config: ClassicalConfig) -> str:
    """The row label of classical rule ``name`` ("AR(1)", "momentum", ...)."""
    return {
        "ar": f"AR({config.ar_order})",
        "momentum": "momentum",
        "reversal": "reversal",
        "time_of_day": "time-of-day",
        SELECTED: SELECTED_LABEL,
    }[name]


def check_names(names: Sequence[str], where: str) -> tuple[str, ...]:
    """``names`` in table order; ValueError naming ``where`` for an unknown one."""
    unknown = sorted(set(names) - set(CLASSICAL))
    if unknown:
        raise ValueError(f"{where}: unknown classical rows {unknown}; use {list(CLASSICAL)}")
    return tuple(n for n in CLASSICAL if n in names)


# ---- signals: pure functions of the bars up to t ------------------------------------------
def session_buckets(arrays: TaskArrays, buckets: int) -> np.ndarray:
    """int [N]: the session bucket of the bar a position decided on bar t is held over (bar
    t + 1), from bar t's row alone: bucket of ``timestamp[t] + bar_minutes`` within bar t's
    session (equal slices of that session's hours in the instrument's exchange calendar,
    ``metatrade.data.calendar.assign_sessions``: local time, daylight saving and early
    closes included), or 0 after a session's last bar. A bar as long as a session (daily,
    weekly) has no time of day: every bucket 0.

    The one place the time-of-day rule reads the session clock."""
    market = arrays.require_market()
    ts = np.asarray(arrays.timestamps, dtype=np.int64)
    sessions = assign_sessions(ts, market.instrument.calendar, market.timezone)
    held = ts // _MINUTE_NS + arrays.bar_minutes - sessions.open // _MINUTE_NS
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = held.astype(np.float64) / sessions.minutes
    out = np.clip(np.floor(np.nan_to_num(frac) * buckets), 0, buckets - 1).astype(np.int64)
    if arrays.bar_minutes >= np.nanmax(sessions.minutes, initial=0.0):
        out[:] = 0
    out[np.asarray(arrays.session_end, dtype=bool)] = 0
    return out


def log_returns(close: np.ndarray) -> np.ndarray:
    """r [N]: r[t] = log(close[t] / close[t-1]); r[0] = NaN (its past is not given)."""
    r = np.full(len(close), np.nan)
    r[1:] = np.diff(np.log(np.asarray(close, dtype=np.float64)))
    return r


def _sign(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.sign(x)).astype(np.int8)


def ar_positions(close: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """sign(sum_i coefs[i] r[t-i]); flat until p returns exist."""
    r = log_returns(close)
    pred = np.zeros(len(r))
    for i, c in enumerate(coefs):
        pred[i:] += c * r[: len(r) - i]
    pred[: len(coefs)] = np.nan
    return _sign(pred)


def fit_ar(close: np.ndarray, order: int) -> np.ndarray:
    """Least-squares AR(p) coefficients (no intercept) of the log returns of ``close``."""
    r = log_returns(close)[1:]
    m = len(r) - order
    if m < order + 1:
        return np.zeros(order)
    x = np.stack([r[order - 1 - i : order - 1 - i + m] for i in range(order)], axis=1)
    coefs, *_ = np.linalg.lstsq(x, r[order:], rcond=None)
    return coefs


def momentum_positions(close: np.ndarray, horizon: int, direction: int) -> np.ndarray:
    """direction x sign(log(close[t] / close[t-h])); flat for t < h."""
    c = np.log(np.asarray(close, dtype=np.float64))
    out = np.zeros(len(c), dtype=np.int8)
    out[horizon:] = direction * _sign(c[horizon:] - c[:-horizon])
    return out


def fit_time_of_day(close: np.ndarray, next_bucket: np.ndarray, buckets: int) -> np.ndarray:
    """Mean next log return by the bucket of the bar it is earned over, [buckets] (0 where a
    bucket has no observation)."""
    nxt = log_returns(close)[1:]
    b = next_bucket[:-1]
    sums = np.bincount(b, weights=nxt, minlength=buckets)
    counts = np.bincount(b, minlength=buckets)
    return np.divide(sums, counts, out=np.zeros(buckets), where=counts > 0)


# ---- the rules ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FittedRule(PositionRule):
    """A classical rule fitted on one task's adaptation rows: ``positions(arrays)`` gives
    the whole task's positions, causal; ``params`` what was fitted (e.g. ``{"h": 4}``,
    ``{"rule": "momentum"}``); ``insample_return`` its ledger return on ``rows``."""

    rows: Rows = (0, 0)
    params: dict[str, Any] = field(default_factory=dict)
    insample_return: float = 0.0


@dataclass(frozen=True)
class _Candidate:
    """One way to trade: rule ``kind`` with ``params``, applicable to any run of rows."""

    kind: str
    params: dict[str, Any]

    def positions(self, close: np.ndarray, next_bucket: np.ndarray) -> np.ndarray:
        """Positions [n] on ``close`` [n] (``next_bucket`` [n]: time of day only)."""
        if self.kind == "ar":
            return ar_positions(close, np.asarray(self.params["coefs"]))
        if self.kind in ("momentum", "reversal"):
            return momentum_positions(close, self.params["h"], 1 if self.kind == "momentum" else -1)
        return _sign(np.asarray(self.params["bucket_means"])[next_bucket])


def _candidates(name: str, close: np.ndarray, nb: np.ndarray, cfg: ClassicalConfig):
    """The candidates of rule ``name`` fitted on a window's ``close`` and next buckets."""
    if name == "ar":
        return [_Candidate(name, {"coefs": fit_ar(close, cfg.ar_order).tolist()})]
    if name in ("momentum", "reversal"):
        return [_Candidate(name, {"h": h}) for h in cfg.horizons]
    return [_Candidate(name, {"bucket_means": fit_time_of_day(close, nb, cfg.buckets).tolist()})]


def window_arrays(arrays: TaskArrays, rows: Rows) -> TaskArrays:
    """Rows [lo, hi) of a task as a task of their own (split "window" = all of it)."""
    lo, hi = rows
    if not 0 <= lo < hi - 1 < len(arrays):
        raise ValueError(f"task {arrays.task}: adaptation rows [{lo}, {hi}) need >= 2 rows")
    cut = {
        k: getattr(arrays, k)[lo:hi]
        for k in ("timestamps", "open", "high", "low", "close", "features", "session_end")
    }
    return replace(arrays, **cut, splits={"window": (0, hi - lo)})


def ledger_returns(
    arrays: TaskArrays, rows: Rows, positions: Sequence[np.ndarray], env: TradingEnvConfig
) -> np.ndarray:
    """[C] final equity / C0 - 1 of trading each position array (over rows [lo, hi)) in the
    protocol's ledger from row lo to row hi - 1 (see the module docstring)."""
    # Imported here: protocol_rollouts imports protocol_config, which imports this module.
    from metatrade.evaluation.protocol_rollouts import rollout_returns, rule_actor

    window = window_arrays(arrays, rows)
    cfg = env.with_overrides(lookback=1, split="window", episode_length=None, liquidate_at_end=True)
    ledger = BatchTradingEnv([window] * len(positions), 1, cfg)
    return rollout_returns(ledger, rule_actor(list(positions)), None)[:, 0]


def _fitted(name: str, cand: _Candidate, rows: Rows, ret: float, cfg: ClassicalConfig):
    def positions(a: TaskArrays) -> np.ndarray:
        nb = session_buckets(a, cfg.buckets) if name == "time_of_day" else np.zeros(0, np.int64)
        return cand.positions(a.close, nb)

    return FittedRule(label(name, cfg), positions, rows, cand.params, float(ret))


def fit_classical(
    names: Sequence[str],
    arrays: TaskArrays,
    rows: Rows,
    *,
    env: TradingEnvConfig,
    config: ClassicalConfig | None = None,
) -> dict[str, FittedRule]:
    """Fit the classical rules ``names`` on rows [lo, hi) of one task: {row label: rule}.

    Every candidate of the rules needed (``classical_selected`` needs all four) is scored
    in one batched ledger run; each rule keeps its best candidate, ``classical_selected``
    the best rule (module docstring)."""
    cfg = config or ClassicalConfig()
    names = check_names(names, "fit_classical")
    if not names:
        return {}
    needed = CLASSICAL[:4] if SELECTED in names else names
    win = window_arrays(arrays, rows)
    nb = session_buckets(win, cfg.buckets)
    cands = {n: _candidates(n, win.close, nb, cfg) for n in needed}
    flat = [c for n in needed for c in cands[n]]
    scores = ledger_returns(arrays, rows, [c.positions(win.close, nb) for c in flat], env)
    best: dict[str, FittedRule] = {}
    i = 0
    for n in needed:
        s = scores[i : i + len(cands[n])]
        j = int(np.argmax(s))
        best[n] = _fitted(n, cands[n][j], rows, s[j], cfg)
        i += len(cands[n])
    out = {label(n, cfg): best[n] for n in names if n != SELECTED}
    if SELECTED in names:
        pick = max(needed, key=lambda n: (best[n].insample_return, -needed.index(n)))
        chosen = best[pick]
        params = {"rule": pick, **chosen.params}
        out[SELECTED_LABEL] = replace(chosen, name=SELECTED_LABEL, params=params)
    return out


@dataclass(frozen=True)
class AdaptiveRule:
    """One classical rule by its config name (``CLASSICAL``): ``fit(arrays, rows, env=...)``
    fits it on the adaptation rows and returns the ``PositionRule`` to trade."""

    name: str
    config: ClassicalConfig = field(default_factory=ClassicalConfig)

    def fit(self, arrays: TaskArrays, rows: Rows, *, env: TradingEnvConfig) -> FittedRule:
        fits = fit_classical([self.name], arrays, rows, env=env, config=self.config)
        return fits[label(self.name, self.config)]


def fit_tasks(
    names: Sequence[str],
    arrays: Sequence[TaskArrays],
    rows: Sequence[Rows],
    *,
    env: TradingEnvConfig,
    config: ClassicalConfig | None = None,
) -> dict[str, list[FittedRule]]:
    """``fit_classical`` on every task: {row label: [rule per task]}."""
    fits = [
        fit_classical(names, a, r, env=env, config=config)
        for a, r in zip(arrays, rows, strict=True)
    ]
    return {k: [f[k] for f in fits] for k in fits[0]} if fits else {}


def describe(fits: Mapping[str, FittedRule]) -> dict[str, dict[str, Any]]:
    """JSON-ready {label: {rows, params, insample_return}} of one task's fits."""
    return {
        k: {"rows": list(f.rows), "params": f.params, "insample_return": f.insample_return}
        for k, f in fits.items()
    }
