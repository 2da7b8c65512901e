"""A synthetic task family with several kinds of structure, each task keeping its true rule.

Kinds (``metatrade.data.regime_kinds`` has each model's equation): momentum and reversal
(``ar``: AR on the sum of the last h bars), intraday seasonality (``seasonal``: a drift per
session bucket), volatility-conditioned autocorrelation (``vol_ar``), hidden Markov
switching between autocorrelation regimes (``markov``), a move after the open that
continues or fades the overnight gap (``gap``) and pure noise (``noise``). ``RegimesConfig``
(the run config's ``data.regimes``) holds the mixture weights and each kind's parameter
ranges; ``write_regime_tasks`` draws tasks (kinds in proportion to the weights, parameters
uniform in the ranges, one seed per task derived from the folder's seed) and writes them in
the ``DataLoader``'s format with the ``synthetic_params.json`` sidecar that keeps every
task's ``TaskRule`` (kind, parameters, seed, and the hidden state path of ``markov`` tasks).

The oracle (``TaskRule.positions``) holds the sign of the true conditional expected next
return given the information at bar t. For ``markov`` it knows the hidden state
(``oracle="state"``, the default); ``oracle="filter"`` uses Hamilton's filter instead (the
parameters known, the state inferred from the bars). ``noise`` tasks' oracle is flat.

Timestamps: the synthetic market's sessions (``metatrade.data.synthetic.SYNTHETIC_MARKET``,
written beside the bars as ``instruments.yaml``; ``session_timestamps``); ``session_clock``
is the one function that places a bar in its session, and it reads the market's calendar.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from metatrade.data.calendar import assign_sessions
from metatrade.data.instruments import Instrument
from metatrade.data.naming import parse_task_name
from metatrade.data.regime_config import KIND_PARAMS, RegimesConfig, draw_params
from metatrade.data.regime_kinds import EXPECT, KINDS, SIMULATE, Clock, Observed, markov_filter
from metatrade.data.synthetic import (
    PARAMS_FILE,
    session_timestamps,
    synthetic_instrument,
    write_bar_file,
    write_synthetic_market,
)
from metatrade.data.task_arrays import TaskId
from metatrade.io import atomic_write_text

__all__ = ["KINDS", "RegimesConfig", "TaskRule", "load_task_rules", "write_regime_tasks"]

START = "2024-01-01"
"""the first session of a task (of a set's first task when the set is staggered)"""


FAMILY = "regimes"
"""the sidecar's ``family`` entry for a folder written here (AR(1) folders have none)"""


@functools.cache
def _synthetic_market() -> Instrument:
    return synthetic_instrument(FAMILY)


def session_clock(timestamps: np.ndarray, instrument: Instrument | None = None) -> Clock:
    """Each bar's place in its session from its start time (int64 ns UTC [N]), read from the
    market's calendar (``metatrade.data.calendar``): the fraction of its session elapsed, and
    True on a session's first bar (and on row 0). ``instrument``: the market the bars trade
    in, default the synthetic market the regime tasks are written for (``SYNTHETIC_MARKET``)."""
    inst = instrument or _synthetic_market()
    ts = np.asarray(timestamps, dtype=np.int64)
    sessions = assign_sessions(ts, inst.calendar, inst.timezone)
    length = np.maximum(sessions.close - sessions.open, 1)
    fraction = np.clip((ts - sessions.open) / length, 0.0, 1.0 - 1e-9)
    first = np.ones(len(ts), dtype=bool)
    first[1:] = sessions.label[1:] != sessions.label[:-1]
    return Clock(fraction=fraction, first=first)


@dataclass(frozen=True)
class TaskRule:
    """One task's true rule: its ``kind``, base innovation std ``sigma`` (per bar, fraction
    of price), the kind's ``params`` (``regime_config.KIND_PARAMS``), the std of overnight
    gaps that predict nothing (``overnight_gap``, units of sigma), the ``seed`` of its bars and,
    for ``markov``, the hidden state path as ``switches``: ((bar start ns UTC, state), ...)
    from the first bar on."""

    kind: str
    sigma: float
    params: dict[str, Any]
    overnight_gap: float = 0.0
    seed: int = 0
    switches: tuple[tuple[int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TaskRule kind={self.kind!r}: use one of {KINDS}")
        missing = set(KIND_PARAMS[self.kind]) - set(self.params)
        if missing:
            raise ValueError(f"TaskRule {self.kind}: parameters {sorted(missing)} missing")
        if self.kind == "markov" and not self.switches:
            raise ValueError("TaskRule markov: the hidden state path (switches) is missing")

    def states_at(self, timestamps: np.ndarray) -> np.ndarray | None:
        """The hidden state of each bar (int [N]), or None for kinds without one."""
        if not self.switches:
            return None
        times = np.array([t for t, _ in self.switches], dtype=np.int64)
        values = np.array([s for _, s in self.switches], dtype=np.int64)
        idx = np.searchsorted(times, np.asarray(timestamps, dtype=np.int64), side="right") - 1
        return values[np.maximum(idx, 0)]

    def expected_next(
        self,
        *,
        open_: np.ndarray,
        close: np.ndarray,
        timestamps: np.ndarray,
        oracle: Literal["state", "filter"] = "state",
    ) -> np.ndarray:
        """E[b_{t+1} | information at bar t] per bar, float64 [N] (log return of the next
        bar's body; 0 on the last bar). ``oracle="filter"``: markov tasks infer the state."""
        o, c = np.asarray(open_, np.float64), np.asarray(close, np.float64)
        gap = np.zeros(len(c))
        gap[1:] = np.log(o[1:] / c[:-1])
        obs = Observed(
            body=np.log(c / o),
            gap=gap,
            clock=session_clock(timestamps),
            sigma=self.sigma,
            states=self.states_at(timestamps),
        )
        if self.kind == "markov" and oracle == "filter":
            probs = markov_filter(self.params, obs.body, self.sigma)
            out = probs @ np.asarray(self.params["phi"], dtype=np.float64) * obs.body
        else:
            out = EXPECT[self.kind](self.params, obs)
        out[-1] = 0.0
        return out

    def positions(
        self, arrays: Any, *, threshold: float = 0.0, oracle: Literal["state", "filter"] = "state"
    ) -> np.ndarray:
        """The oracle's target position per bar, int8 [N] in {-1, 0, +1}, of a
        ``TaskArrays`` (or anything with open, close, timestamps): the sign of the expected
        next return, 0 where its size is <= ``threshold`` (fraction of price)."""
        e = self.expected_next(
            open_=arrays.open, close=arrays.close, timestamps=arrays.timestamps, oracle=oracle
        )
        return (np.sign(e) * (np.abs(e) > threshold)).astype(np.int8)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sigma": self.sigma,
            "params": self.params,
            "overnight_gap": self.overnight_gap,
            "seed": self.seed,
            "switches": [list(s) for s in self.switches],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TaskRule:
        return cls(
            kind=doc["kind"],
            sigma=float(doc["sigma"]),
            params=dict(doc["params"]),
            overnight_gap=float(doc.get("overnight_gap", 0.0)),
            seed=int(doc.get("seed", 0)),
            switches=tuple((int(t), int(s)) for t, s in doc.get("switches", [])),
        )


def generate_task(
    rule: TaskRule, n_bars: int, *, bar_minutes: int = 5, start: str = START
) -> tuple[pd.DataFrame, TaskRule]:
    """OHLCV bars of one task (tz-aware index, volume 0) from ``rule.seed``, and the rule
    with its hidden state path filled in (``markov``). Deterministic for the rule."""
    rng = np.random.default_rng(rule.seed)
    index = session_timestamps(n_bars, bar_minutes, start)
    index.name = "datetime"
    clock = session_clock(index.as_unit("ns").asi8)
    sim = SIMULATE[rule.kind](rule.params, rule.sigma, clock, rng)
    gap = sim.gap
    if rule.kind != "gap" and rule.overnight_gap > 0:
        from metatrade.data.regime_kinds import overnight_gaps

        gap = overnight_gaps(clock, rule.overnight_gap * rule.sigma, rng)
    price0 = float(rng.uniform(10_000, 40_000))
    log_close = np.log(price0) + np.cumsum(gap + sim.body)
    close = np.exp(log_close)
    open_ = np.exp(log_close - sim.body)  # open_t = close_{t-1} e^{G_t} = close_t e^{-b_t}
    wick = rng.standard_normal((2, n_bars))
    high = np.maximum(open_, close) * np.exp(np.abs(wick[0]) * sim.sigma_t / 2)
    low = np.minimum(open_, close) * np.exp(-np.abs(wick[1]) * sim.sigma_t / 2)
    bars = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": 0.0}, index=index
    )
    if sim.states is not None:
        change = np.flatnonzero(np.diff(sim.states, prepend=-1) != 0)
        times = index.as_unit("ns").asi8
        rule = _with_switches(rule, tuple((int(times[i]), int(sim.states[i])) for i in change))
    return bars, rule


def _with_switches(rule: TaskRule, switches: tuple[tuple[int, int], ...]) -> TaskRule:
    doc = rule.to_json() | {"switches": [list(s) for s in switches]}
    return TaskRule.from_json(doc)


def kind_counts(weights: dict[str, float], n_tasks: int) -> dict[str, int]:
    """Tasks per kind in proportion to ``weights`` (largest remainders; ties in KINDS order)."""
    kinds = [k for k in KINDS if weights.get(k, 0.0) > 0]
    total = sum(weights[k] for k in kinds)
    exact = {k: n_tasks * weights[k] / total for k in kinds}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    rest = sorted(kinds, key=lambda k: (-(exact[k] - counts[k]), KINDS.index(k)))
    for k in rest[: n_tasks - sum(counts.values())]:
        counts[k] += 1
    return counts


def draw_rules(config: RegimesConfig, n_tasks: int, seed: int | Sequence[int]) -> list[TaskRule]:
    """``n_tasks`` rules: kinds in proportion to the weights (in shuffled order), parameters
    uniform in the ranges, each task's bar seed spawned from ``seed`` (an int or a list of
    ints: ``numpy.random.SeedSequence`` entropy)."""
    root = np.random.SeedSequence(seed)
    draw_seq, *task_seqs = root.spawn(n_tasks + 1)
    rng = np.random.default_rng(draw_seq)
    kinds = [k for k, c in kind_counts(config.weights, n_tasks).items() for _ in range(c)]
    rng.shuffle(kinds)
    rules = []
    for kind, seq in zip(kinds, task_seqs, strict=True):
        rules.append(
            TaskRule(
                kind=kind,
                sigma=float(rng.uniform(*config.sigma)),
                params=draw_params(config, kind, rng),
                overnight_gap=float(rng.uniform(*config.overnight_gap)),
                seed=int(seq.generate_state(1)[0]),
                switches=((0, 0),) if kind == "markov" else (),  # filled in by generate_task
            )
        )
    return rules


@dataclass(frozen=True)
class RegimeSet:
    """One set of tasks of a folder: names ``<prefix><i:03d>_<kind>_<minutes>``, drawn from
    ``seed`` (int or list of ints), ``n_bars`` bars each. ``stagger``: task i starts
    ``i * stagger`` weekdays after ``START`` (held-out sets: independent tasks on days of
    their own, so the evaluation's day bootstrap does not read one day's bars of many tasks
    as one market's day), else every task starts on ``START``."""

    prefix: str
    n_tasks: int
    seed: int | Sequence[int]
    n_bars: int
    stagger: int = 0

    def start(self, i: int) -> str:
        """The first session's date of task ``i``."""
        return str((pd.Timestamp(START) + pd.offsets.BDay(i * self.stagger)).date())


def set_seed(seed: int, label: str) -> list[int]:
    """The seed entropy of a task set named ``label`` of a run seeded ``seed``: its own
    stream, independent of the training tasks' (which are drawn from ``seed`` itself)."""
    return [int(seed), zlib.crc32(f"regimes:{label}".encode())]


def write_regime_sets(
    folder: str | Path,
    sets: Sequence[RegimeSet],
    config: RegimesConfig | None = None,
    *,
    bar_minutes: int = 5,
    fmt: str = "parquet",
) -> dict[TaskId, TaskRule]:
    """Write every task of ``sets`` and one sidecar into ``folder``; deterministic for the
    sets and ``config``. Returns {task: rule}."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt={fmt!r}; use 'parquet' or 'csv'")
    config = config or RegimesConfig()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tasks: dict[TaskId, TaskRule] = {}
    for spec in sets:
        for i, rule in enumerate(draw_rules(config, spec.n_tasks, spec.seed)):
            bars, rule = generate_task(
                rule, spec.n_bars, bar_minutes=bar_minutes, start=spec.start(i)
            )
            stem = f"{spec.prefix}{i:03d}_{rule.kind}_{bar_minutes}"
            write_bar_file(bars, out, stem, fmt=fmt)
            tasks[parse_task_name(f"{stem}.{fmt}")] = rule
    doc = {
        "family": FAMILY,
        "bar_minutes": bar_minutes,
        "sets": [
            {"prefix": s.prefix, "n_tasks": s.n_tasks, "seed": s.seed, "n_bars": s.n_bars}
            | {"stagger": s.stagger}
            for s in sets
        ],
        "tasks": {f"{t.instrument}_{t.timeframe}": r.to_json() for t, r in tasks.items()},
    }
    write_synthetic_market(out)  # the bars are in session_timestamps' sessions
    # The sidecar is written last and atomically: its presence marks a complete folder.
    atomic_write_text(out / PARAMS_FILE, json.dumps(doc, indent=1))
    return tasks


def write_regime_tasks(
    folder: str | Path,
    n_tasks: int,
    seed: int | Sequence[int],
    config: RegimesConfig | None = None,
    *,
    n_bars: int = 5_000,
    bar_minutes: int = 5,
    fmt: str = "parquet",
    prefix: str = "Reg",
) -> dict[TaskId, TaskRule]:
    """Write ``n_tasks`` tasks (``Reg007_vol_ar_5.parquet``, ...) and the sidecar into
    ``folder``; deterministic for ``seed`` and ``config``. Returns {task: rule}."""
    spec = RegimeSet(prefix, n_tasks, seed, n_bars)
    return write_regime_sets(folder, [spec], config, bar_minutes=bar_minutes, fmt=fmt)


def load_task_rules(folder: str | Path) -> dict[TaskId, TaskRule]:
    """The rules of a folder written by ``write_regime_tasks`` (from its sidecar)."""
    path = Path(folder) / PARAMS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no sidecar; write the folder with write_regime_tasks")
    doc = json.loads(path.read_text())
    if doc.get("family") != FAMILY:
        raise ValueError(f"{path}: not a regimes folder (AR(1) tasks: load_synthetic_params)")
    out = {}
    for stem, entry in doc["tasks"].items():
        try:
            out[parse_task_name(f"{stem}.parquet")] = TaskRule.from_json(entry)
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}: task {stem}: {err}") from err
    return out
