"""``DataLoader``: a folder of OHLCV files as a set of meta-learning tasks.

>>> from metatrade.data import DataLoader, HeldOut
>>> loader = DataLoader(heldout=HeldOut(instruments=("Finnifty",)))  # embedded sample data
>>> batch = loader.sample_tasks(4, rng=0)                           # train tasks only
>>> arrays = loader.get_task_arrays(*batch[0])                      # bars + features + splits

Each instrument's market (calendar, time zone, currency, costs, lot size) comes from the
folder's ``instruments.yaml`` (``metatrade.data.instruments``; the embedded NSE names have
a default description). Parsed bars and feature arrays are cached in memory (per loader)
and on disk (see ``metatrade.data.cache``), so a second run over unchanged files skips
parsing and TA-Lib.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from metatrade.data.cache import DiskCache
from metatrade.data.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    available_features,
    build_task_arrays,
    check_feature_names,
    expand_feature_names,
)
from metatrade.data.instruments import Instrument, InstrumentRegistry, Market
from metatrade.data.naming import data_files, parse_task_name, timeframe_sort_key
from metatrade.data.sampling import balanced_sample
from metatrade.data.splits import HeldOut, SplitConfig
from metatrade.data.task_arrays import TaskArrays, TaskId
from metatrade.data.validation import (
    OHLCV_COLUMNS,
    DataValidationError,
    Problem,
    load_bars,
    too_short,
    utc_index,
)
from metatrade.errors import DataError, DataWarning

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
_BARS_VERSION = 2  # bump when parsing/cleaning rules change


class DataLoader:
    """Tasks, bars and features of a data folder.

    Args:
        data_dir: folder of ``<INSTRUMENT>_<TIMEFRAME>.csv|.parquet`` (and its
            ``instruments.yaml``); None = the embedded sample data set
            (``metatrade/data/sample``, all 36 real tasks).
        tz: time zone of every instrument (naive timestamps, the returned index, shown
            times), replacing each description's (``data.timezone``); None = each
            instrument's own. Sessions always come from the instrument's calendar.
        instruments: instrument -> description keys replacing its ``instruments.yaml``
            entry (``data.instruments``).
        splits: how each task's time axis is cut into train/validation/test.
        heldout: tasks meta-training never sees (``sample_tasks(task_set="test")`` returns them).
        heldout_splits: the time splits of the held-out tasks (e.g. adapt on their first fifth
            and test on the rest); None = ``splits``.
        cache_dir: on-disk cache folder; None = ``$METATRADE_CACHE`` or ``~/.cache/metatrade``;
            False disables the disk cache.
        strict: a file that cannot be used (bad name, bad rows, too short) is an error for
            the whole folder. Default: it is skipped with a ``DataWarning`` naming it and the
            reason, listed in ``skipped``, and every other task stays usable.
        lookback: files too short for one observation of this many bars after the feature
            warm-up (plus one bar to trade) count as unusable.
        features: the feature columns ``get_task_arrays`` returns, by name (``env.features``);
            None = ``FEATURE_NAMES``. Every available feature is computed and cached once; a
            selection only picks columns, so loaders of different selections share the cache.

    The task list (``get_available_tasks``) reads and checks every file once (cached), so
    a bad file is found before training starts, not in the middle of it.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        tz: str | None = None,
        instruments: dict | None = None,
        splits: SplitConfig = SplitConfig(),
        heldout: HeldOut = HeldOut(),
        heldout_splits: SplitConfig | None = None,
        cache_dir: str | Path | None | bool = None,
        strict: bool = False,
        lookback: int = 1,
        features: tuple[str, ...] | list[str] | None = None,
    ):
        features = None if features is None else expand_feature_names(features)
        check_feature_names(features, what="DataLoader features")
        self.features = FEATURE_NAMES if features is None else tuple(features)
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else SAMPLE_DIR
        self.tz = tz
        self.splits = splits
        self.heldout = heldout
        self.heldout_splits = heldout_splits
        self.strict = strict
        self.lookback = lookback
        self.skipped: dict[str, str] = {}
        """file name -> why it was skipped (never filled in strict mode)"""
        self.too_short: dict[TaskId, int] = {}
        """task -> its bar count, for files too short for ``lookback`` (strict mode too)"""
        self._checked = False
        root = None if cache_dir is None or isinstance(cache_dir, bool) else cache_dir
        self.cache = None if cache_dir is False else DiskCache(root)
        self._files = self._discover()
        self.registry = InstrumentRegistry(self.data_dir, overrides=instruments, timezone=tz)
        self._check_instruments()
        self._bars: dict[TaskId, pd.DataFrame] = {}
        self._arrays: dict[TaskId, TaskArrays] = {}
        self._task_sets: dict[str, list[TaskId]] = {}  # "all" (sorted), "train", "test"

    def _discover(self) -> dict[TaskId, Path]:
        if not self.data_dir.is_dir():
            raise DataValidationError(
                Problem(
                    str(self.data_dir),
                    "no such folder; pass a folder of <INSTRUMENT>_<TIMEFRAME>.csv files",
                )
            )
        files: dict[TaskId, Path] = {}
        problems: list[Problem] = []
        for f in data_files(self.data_dir):
            try:
                task = parse_task_name(f)
            except ValueError as err:
                problems.append(Problem(f.name, str(err).split(": ", 1)[1]))
                continue
            if task in files:
                problems.append(
                    Problem(
                        f.name, f"same task as {files[task].name}; keep only one of the two files"
                    )
                )
            else:
                files[task] = f
        if problems and self.strict:
            raise DataValidationError(problems)
        for p in problems:
            self.skipped[p.file] = p.message
        if not files:
            raise DataValidationError(
                Problem(
                    str(self.data_dir),
                    "no .csv or .parquet files; add <INSTRUMENT>_<TIMEFRAME>.csv files",
                )
            )
        return files

    def _check_instruments(self) -> None:
        """Every instrument needs a market description: the files of one without are
        unusable (skipped with the lines that would describe it, or, strict, an error); a
        description with a mistake is an error for the whole folder."""
        missing: list[str] = []
        for name in sorted({t.instrument for t in self._files}):
            try:
                self.registry.get(name)
            except DataError as err:
                if "no market description" not in str(err):
                    raise  # a description with a mistake: its own message
                missing.append(name)
        if not missing:
            return
        files = sorted(p.name for t, p in self._files.items() if t.instrument in missing)
        message = self.registry.missing_message(missing, files)
        if self.strict or all(t.instrument in missing for t in self._files):
            raise DataError(message)
        for task in [t for t in self._files if t.instrument in missing]:
            self.skipped[self._files.pop(task).name] = message.split(": ", 1)[1]

    def instrument(self, name: str) -> Instrument:
        """The market description of instrument ``name`` (``metatrade.data.instruments``)."""
        return self.registry.get(name)

    def _check_files(self) -> None:
        """Read every file once: keep the usable ones, skip (or, strict, refuse) the rest."""
        if self._checked:
            return
        problems: list[Problem] = []
        for task, path in list(self._files.items()):
            try:
                bars = self._load_bars(task)
            except DataValidationError as err:
                found = err.problems
            else:
                short = too_short(len(bars), self.lookback)
                found = [Problem(path.name, short)] if short else []
                if short:
                    self.too_short[task] = len(bars)
            if found:
                problems.extend(found)
                if not self.strict:
                    del self._files[task]
                    self._bars.pop(task, None)
                    self.skipped[path.name] = "; ".join(
                        str(p)[len(path.name) :].lstrip(":, ") for p in found[:3]
                    )
        if problems and self.strict:
            raise DataValidationError(problems)
        self._checked = True
        if self.skipped:
            listed = "; ".join(f"{name}: {why}" for name, why in list(self.skipped.items())[:3])
            if len(self.skipped) > 3:  # one readable line: `metatrade data list` shows them all
                listed += f"; and {len(self.skipped) - 3} more"
            warnings.warn(
                f"{self.data_dir}: skipped {len(self.skipped)} unusable file(s) ({listed}); "
                "fix or remove them (strict mode stops instead)",
                DataWarning,
                stacklevel=3,
            )
        if not self._files:
            raise DataValidationError(
                Problem(str(self.data_dir), "no usable data files; every file was skipped")
            )

    # ---- tasks -----------------------------------------------------------------------------
    def get_available_tasks(self) -> list[TaskId]:
        """Every usable task in the folder (held-out ones included), sorted by instrument then
        minutes; unusable files are in ``skipped`` (see ``strict``)."""
        self._check_files()  # (after it the file list is final: the task sets are built once)
        if "all" not in self._task_sets:
            self._task_sets["all"] = sorted(
                self._files, key=lambda t: (t.instrument, timeframe_sort_key(t.timeframe))
            )
        return list(self._task_sets["all"])

    def tasks(self, task_set: str = "train") -> list[TaskId]:
        """A task set: "train" (not held out), "test" (held out) or "all" (a set of tasks,
        not a time split of their bars)."""
        if task_set not in ("train", "test", "all"):
            raise ValueError(
                f"task_set={task_set!r}; use 'train' (meta-training), 'test' (held out) or 'all'"
            )
        every = self.get_available_tasks()
        if task_set == "all":
            return every
        if task_set not in self._task_sets:  # asked at every meta-iteration: built once
            held = task_set == "test"
            self._task_sets[task_set] = [t for t in every if (t in self.heldout) == held]
        return list(self._task_sets[task_set])

    def sample_tasks(
        self, n: int, *, task_set: str = "train", rng: np.random.Generator | int | None = None
    ) -> list[TaskId]:
        """``n`` tasks of a task set ("train": meta-training, "test": held out), balanced over
        instruments and timeframes, no repeats when n <= pool size; reproducible for a seed
        (scheme: ``metatrade.data.sampling``)."""
        pool = self.tasks(task_set)
        if not pool:
            raise ValueError(
                f"no tasks in task set {task_set!r} (held out: {self.heldout}); "
                "configure HeldOut(...) to hold some tasks out, or sample task_set='train'"
            )
        return balanced_sample(pool, n, rng)

    def task_path(self, instrument: str, timeframe: str) -> Path:
        task = TaskId(instrument, str(timeframe))
        if task not in self._files:
            skipped = [f"{n} ({why})" for n, why in self.skipped.items()]
            raise DataError(
                f"no task {task} in {self.data_dir}; available: "
                f"{', '.join(map(str, self.get_available_tasks()))}"
                + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
            )
        return self._files[task]

    # ---- bars ------------------------------------------------------------------------------
    def get_task_data(self, instrument: str, timeframe: str) -> pd.DataFrame:
        """Clean bars: tz-aware sorted index, columns open/high/low/close/volume (float64)."""
        return self._load_bars(TaskId(instrument, str(timeframe))).copy()

    def _load_bars(self, task: TaskId) -> pd.DataFrame:
        if task in self._bars:
            return self._bars[task]
        path = self.task_path(*task)
        instrument = self.instrument(task.instrument)
        key = ("bars", _BARS_VERSION, repr(instrument))
        hit = self.cache.load("bars", path, key) if self.cache else None
        if hit is not None:
            index = utc_index(hit["timestamps"], instrument.timezone)
            index.name = "datetime"
            bars = pd.DataFrame(hit["ohlcv"], index=index, columns=list(OHLCV_COLUMNS))
        else:
            bars = load_bars(path, instrument)
            if self.cache:
                ts = np.asarray(bars.index.as_unit("ns").asi8, dtype=np.int64)
                self.cache.save("bars", path, key, {"timestamps": ts, "ohlcv": bars.to_numpy()})
        self._bars[task] = bars
        return bars

    # ---- features --------------------------------------------------------------------------
    def task_splits(self, task: TaskId) -> SplitConfig:
        """How ``task``'s time axis is cut: ``heldout_splits`` for a held-out task if given."""
        if self.heldout_splits is not None and task in self.heldout:
            return self.heldout_splits
        return self.splits

    def get_task_arrays(self, instrument: str, timeframe: str) -> TaskArrays:
        """Bars + causal features (the loader's ``features``) + split ranges + sessions + market
        of one task (cached: every available feature on disk, the selection in memory)."""
        task = TaskId(instrument, str(timeframe))
        if task in self._arrays:
            return self._arrays[task]
        path = self.task_path(*task)
        inst = self.instrument(task.instrument)
        every = available_features()
        splits = self.task_splits(task)
        key = ("arrays", FEATURE_VERSION, every, _BARS_VERSION, repr(inst), repr(splits))
        hit = self.cache.load("arrays", path, key) if self.cache else None
        if hit is not None:
            arrays = _arrays_from_npz(task, hit, inst)
        else:
            bars = self._load_bars(task)
            arrays = build_task_arrays(task, bars, splits=splits, instrument=inst, features=every)
            if self.cache:
                self.cache.save("arrays", path, key, _arrays_to_npz(arrays))
        arrays = arrays.select_features(self.features)
        self._arrays[task] = arrays
        return arrays


_SPLIT_ORDER = ("train", "validation", "test")


def _arrays_to_npz(a: TaskArrays) -> dict[str, np.ndarray]:
    return {
        "timestamps": a.timestamps,
        "ohlc": np.stack([a.open, a.high, a.low, a.close]),
        "features": a.features,
        "feature_names": np.array(a.feature_names),
        "session_end": a.session_end,
        "sessions": np.asarray(a.sessions, dtype=np.int64),
        "session_minutes": np.array(a.market.session_minutes if a.market else np.nan),
        "bar_minutes": np.array(a.bar_minutes),
        "splits": np.array([a.splits[k] for k in _SPLIT_ORDER], dtype=np.int64),
    }


def _arrays_from_npz(task: TaskId, z: dict[str, np.ndarray], instrument: Instrument) -> TaskArrays:
    ohlc = z["ohlc"]
    names = tuple(str(x) for x in z["feature_names"])
    return TaskArrays(
        task=task,
        timestamps=z["timestamps"],
        open=ohlc[0],
        high=ohlc[1],
        low=ohlc[2],
        close=ohlc[3],
        features=z["features"],
        feature_names=names,
        session_end=z["session_end"],
        bar_minutes=int(z["bar_minutes"]),
        splits={k: (int(a), int(b)) for k, (a, b) in zip(_SPLIT_ORDER, z["splits"], strict=True)},
        sessions=z["sessions"],
        market=Market(instrument, task.timeframe, float(z["session_minutes"])),
    )
