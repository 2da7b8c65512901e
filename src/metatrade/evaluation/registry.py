"""The trial registry: every configuration scored on a data set, and every look at a sealed
split, in one SQLite file under the runs root (``runs/trials.sqlite``).

Why: a reported Sharpe ratio is the best of the trials behind it. The deflated Sharpe ratio
(Bailey & Lopez de Prado 2014, "The deflated Sharpe ratio") needs N, the number of trials
run on the data set, and the variance of their Sharpe ratios; the probability of backtest
overfitting (Bailey, Borwein, Lopez de Prado & Zhu 2017) needs every trial's returns over
the same periods. A table counts only its own rows; the registry counts every run.

A *trial* is one configuration (``label``, e.g. ``MAML@k1``) of one run scored on one data
set (``data_hash``: the bars and split boundaries of the tasks scored) over one ``split``.
Its ``metrics`` hold at least the per-period Sharpe ratio of its return series (``sharpe``,
not annualised), the number of observations (``n_obs``) and the mean return
(``mean_return``); ``returns`` (optional) maps each period (a date) to its return, for PBO.
A *look* is one read of a sealed split (``metatrade.evaluation.sealed.open_split``).

Concurrency: WAL journal, one short connection per call, every write in a ``BEGIN
IMMEDIATE`` transaction with a busy timeout, so two processes appending at once both land.
Optuna's tables (``metatrade tune``) share the file; ours are prefixed ``registry_``
because Optuna owns a table called ``trials``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metatrade.data.task_arrays import TaskArrays
from metatrade.errors import UserError
from metatrade.io import json_safe

REGISTRY_FILE = "trials.sqlite"
KINDS = ("meta-train", "train", "evaluate", "walkforward", "tune")
REQUIRED_METRICS = ("sharpe", "n_obs", "mean_return")
_TIMEOUT_S = 60.0
_TRIAL_COLUMNS = "id, time, kind, run, config_hash, data_hash, split, seed, label, metrics, returns"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    run TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    split TEXT NOT NULL,
    seed INTEGER,
    label TEXT NOT NULL,
    metrics TEXT NOT NULL,
    returns TEXT
);
CREATE INDEX IF NOT EXISTS registry_trials_data ON registry_trials (data_hash, split);
CREATE TABLE IF NOT EXISTS registry_looks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    run TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    split TEXT NOT NULL,
    command TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS registry_looks_data ON registry_looks (data_hash, split);
"""


@dataclass(frozen=True)
class Trial:
    """One row of the registry (module docstring)."""

    id: int
    time: str
    kind: str
    run: str
    config_hash: str
    data_hash: str
    split: str
    seed: int | None
    label: str
    metrics: dict[str, Any]
    returns: dict[str, float] | None

    @property
    def sharpe(self) -> float:
        value = self.metrics.get("sharpe")
        return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class Look:
    """One read of a sealed split."""

    id: int
    time: str
    run: str
    data_hash: str
    split: str
    command: str


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class TrialRegistry:
    """The registry file at ``path`` (created with its tables on first use).

    Example::

        reg = TrialRegistry("runs/trials.sqlite")
        reg.record_trial(kind="walkforward", run="runs/demo-seed0", config_hash=c,
                         data_hash=d, split="validation", seed=0, label="MAML@k1",
                         metrics={"sharpe": 0.08, "n_obs": 40, "mean_return": 4e-4})
        n, var = reg.count_trials(d), reg.sharpe_variance(d)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"{self.path}: the trial registry is a file; this is a folder")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the same file (Optuna's RDB storage)."""
        return f"sqlite:///{self.path.resolve()}"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as err:
            raise UserError(f"{self.path}: cannot open the trial registry ({err})") from None
        try:
            con.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint under WAL
            yield con
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the lock up front (no upgrade deadlock)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ---- trials
    def record_trial(
        self,
        *,
        kind: str,
        run: str | Path,
        config_hash: str,
        data_hash: str,
        split: str,
        seed: int | None,
        label: str,
        metrics: Mapping[str, Any],
        returns: Mapping[str, float] | None = None,
    ) -> int:
        """Append one trial; returns its id. ``metrics`` needs ``REQUIRED_METRICS``."""
        if kind not in KINDS:
            raise ValueError(f"trial kind {kind!r}: use one of {KINDS}")
        missing = [k for k in REQUIRED_METRICS if k not in metrics]
        if missing:
            raise ValueError(f"trial {label!r}: metrics lack {missing} (need {REQUIRED_METRICS})")
        row = (
            _now(),
            kind,
            str(run),
            config_hash,
            data_hash,
            split,
            seed,
            label,
            json.dumps(json_safe(dict(metrics))),
            None if returns is None else json.dumps(json_safe(dict(returns))),
        )
        with self._write() as con:
            cur = con.execute(
                "INSERT INTO registry_trials (time, kind, run, config_hash, data_hash, split, "
                "seed, label, metrics, returns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cur.lastrowid or 0)

    def trials(
        self,
        *,
        data_hash: str | None = None,
        kind: str | None = None,
        split: str | None = None,
        label: str | None = None,
        run: str | Path | None = None,
    ) -> list[Trial]:
        """Trials matching every filter given (None: any), oldest first."""
        where, args = [], []
        for col, value in (
            ("data_hash", data_hash),
            ("kind", kind),
            ("split", split),
            ("label", label),
            ("run", run),
        ):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(str(value))
        sql = f"SELECT {_TRIAL_COLUMNS} FROM registry_trials"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [_trial(r) for r in rows]

    def count_trials(self, data_hash: str, *, split: str | None = None) -> int:
        """N of the deflated Sharpe ratio: how many trials were run on ``data_hash``."""
        sql = "SELECT COUNT(*) FROM registry_trials WHERE data_hash = ?"
        args = [data_hash]
        if split is not None:
            sql += " AND split = ?"
            args.append(split)
        with self._connect() as con:
            return int(con.execute(sql, args).fetchone()[0])

    def sharpe_variance(self, data_hash: str, *, split: str | None = None) -> float:
        """V[SR_n] of the deflated Sharpe ratio: the variance (ddof 1) of the per-day Sharpe
        ratios of the trials on ``data_hash`` that have one (metrics ``period`` "day": a
        trial scored per test window or per iteration counts in N, not here); nan with
        fewer than 2."""
        found = self.trials(data_hash=data_hash, split=split)
        srs = np.array([t.sharpe for t in found if t.metrics.get("period", "day") == "day"])
        srs = srs[np.isfinite(srs)]
        return float(srs.var(ddof=1)) if srs.size > 1 else float("nan")

    # ---- looks
    def record_look(self, *, run: str | Path, data_hash: str, split: str, command: str) -> int:
        """Append one read of ``split`` of ``data_hash``; returns its id."""
        with self._write() as con:
            cur = con.execute(
                "INSERT INTO registry_looks (time, run, data_hash, split, command) "
                "VALUES (?, ?, ?, ?, ?)",
                (_now(), str(run), data_hash, split, command),
            )
            return int(cur.lastrowid or 0)

    def looks(self, data_hash: str, split: str) -> list[Look]:
        """Every recorded read of ``split`` of ``data_hash``, oldest first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT id, time, run, data_hash, split, command FROM registry_looks "
                "WHERE data_hash = ? AND split = ? ORDER BY id",
                (data_hash, split),
            ).fetchall()
        return [Look(*r) for r in rows]


def _trial(r: tuple) -> Trial:
    """A row of ``_TRIAL_COLUMNS`` -> Trial (metrics and returns decoded from JSON)."""
    row = dict(zip(_TRIAL_COLUMNS.split(", "), r, strict=True))
    row["id"] = int(row["id"])
    row["metrics"] = json.loads(row["metrics"])
    row["returns"] = None if row["returns"] is None else json.loads(row["returns"])
    return Trial(**row)


@dataclass(frozen=True)
class TrialLog:
    """Where an evaluation records its trials: the registry, the run that writes them and
    the hash of its configuration (``kind``, ``seed``, ``prefix`` of every label)."""

    registry: TrialRegistry
    run: str
    config_hash: str
    kind: str = "walkforward"
    seed: int | None = None
    prefix: str = ""

    def with_settings(self, settings: Mapping[str, Any]) -> TrialLog:
        """The same log with the protocol's own settings folded into the config hash."""
        return replace(self, config_hash=config_hash({"run": self.config_hash, **settings}))

    def record(
        self,
        *,
        label: str,
        data_hash: str,
        split: str,
        returns: pd.Series,
        extra: Mapping[str, Any] | None = None,
        config_hash: str | None = None,
    ) -> int:
        """One trial from a per-day return series indexed by date (``series_metrics``, plus
        ``extra`` metrics); ``config_hash`` overrides the log's (a tuning trial's own)."""
        by_day = {str(pd.Timestamp(d).date()): float(r) for d, r in returns.dropna().items()}
        return self.registry.record_trial(
            kind=self.kind,
            run=self.run,
            config_hash=config_hash or self.config_hash,
            data_hash=data_hash,
            split=split,
            seed=self.seed,
            label=self.prefix + label,
            metrics={**series_metrics(returns.to_numpy()), **(extra or {})},
            returns=by_day,
        )


def covered_splits(arrays: TaskArrays, first: int, last: int) -> str:
    """The split label of rows [first, last] of a task: the names of the splits they
    overlap, joined by "+" in time order (e.g. "validation+test")."""
    names = [
        k
        for k, (a, b) in sorted(arrays.splits.items(), key=lambda kv: kv[1])
        if a <= last and b > first
    ]
    return "+".join(names) or "rows"


def registry_path(run_dir: str | Path, override: str | Path | None = None) -> Path:
    """Where a run's trials go: ``override`` (the config's ``run.registry``), else
    ``trials.sqlite`` in the folder holding the run directory (``runs/trials.sqlite``)."""
    if override is not None:
        return Path(override)
    return Path(run_dir).resolve().parent / REGISTRY_FILE


def _digest(h: Any) -> str:
    return h.hexdigest()[:16]


def data_hash(tasks: Sequence[TaskArrays]) -> str:
    """A hash of a data set: each task's name, bars (times and OHLC) and split boundaries,
    in task order. Two runs on the same files and splits get the same hash."""
    h = hashlib.blake2b(digest_size=16)
    for a in sorted(tasks, key=lambda x: str(x.task)):
        h.update(str(a.task).encode())
        for arr in (a.timestamps, a.open, a.high, a.low, a.close):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(json.dumps(sorted(a.splits.items())).encode())
    return _digest(h)


def config_hash(config: Mapping[str, Any], *, ignore: Sequence[str] = ()) -> str:
    """A hash of a configuration (a nested dict), without the dotted keys in ``ignore``
    (bookkeeping such as ``run.out_dir`` that does not change what is scored)."""
    doc = json.loads(json.dumps(json_safe(dict(config)), default=str))
    for key in ignore:
        node = doc
        *parents, last = key.split(".")
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    text = json.dumps(doc, sort_keys=True)
    return _digest(hashlib.blake2b(text.encode(), digest_size=16))


def series_metrics(returns: np.ndarray, *, period: str = "day") -> dict[str, Any]:
    """The registry's required metrics of a per-period return series: per-period Sharpe
    (mean / std, ddof 1; nan when undefined), number of observations, mean return."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    sd = float(r.std(ddof=1)) if r.size > 1 else 0.0
    scale = max(1.0, float(np.abs(r).max())) if r.size else 1.0
    sr = float(r.mean() / sd) if sd > 1e-15 * scale else math.nan
    return {
        "sharpe": sr,
        "n_obs": float(r.size),
        "mean_return": float(r.mean()) if r.size else math.nan,
        "period": period,
    }
