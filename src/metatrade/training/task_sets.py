"""Which tasks a run uses: the data folder's loader, the training and held-out task *sets*
(not to be confused with the train / validation / test time *splits* of every task's rows),
and the checks that every named task exists and that an evaluated task was not trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metatrade.training.config import ConfigError, RunConfig

if TYPE_CHECKING:
    import pandas as pd

    from metatrade.data import DataLoader
    from metatrade.data.task_arrays import TaskArrays, TaskId


def synthetic_dir(cfg: RunConfig) -> Path:
    """Folder of the run's synthetic tasks (written once, deterministic for the seed)."""
    d = cfg.data
    if d.data_dir:
        return Path(d.data_dir)
    name = f"n{d.num_synthetic_tasks}-bars{d.synthetic_bars}-seed{cfg.run.seed}"
    if d.regimes is not None:  # the folder depends on the family's settings too
        from dataclasses import asdict

        digest = hashlib.sha256(json.dumps(asdict(d.regimes), sort_keys=True).encode())
        name = f"regimes-{digest.hexdigest()[:10]}-{name}"
    ev = d.synthetic_eval
    if ev.tasks:
        name += f"-{ev.task_set}{ev.tasks}x{ev.bars or d.synthetic_bars}"
    return cfg.run_dir() / "synthetic_data" / name


def make_loader(cfg: RunConfig) -> DataLoader:
    """``DataLoader`` for the ``data`` section (writing the synthetic tasks when asked).

    Every task the config names must exist: ``data.tasks``, ``data.heldout.tasks`` and each
    held-out instrument and timeframe (a misspelt held-out name would otherwise hold out
    nothing and train on the instrument meant to be unseen); ``ConfigError`` lists what the
    folder holds.
    """
    from metatrade.data import DataLoader, HeldOut

    d = cfg.data
    data_dir: str | Path | None = d.data_dir
    generated: list[tuple[str, str]] = []
    if d.family == "synthetic":
        data_dir = synthetic_dir(cfg)
        if _writes_synthetic(data_dir) or (not d.data_dir and _incomplete(data_dir)):
            _write_generated(cfg, data_dir)
        generated = _synthetic_heldout(cfg, data_dir)
    elif data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigError(f"data.data_dir: {data_dir} is not a directory of OHLCV files")
    held_tasks = [_pair(_task_id(t)) for t in d.heldout.tasks] + generated
    heldout = HeldOut(
        instruments=tuple(d.heldout.instruments),
        timeframes=tuple(d.heldout.timeframes),
        tasks=tuple(held_tasks),
    )
    loader = DataLoader(
        data_dir,
        tz=d.timezone,
        instruments=d.instruments,
        splits=d.splits,
        heldout=heldout,
        heldout_splits=d.heldout.splits,
        strict=d.strict,
        lookback=cfg.env.lookback,
        features=cfg.env.features,
    )
    check_named_tasks(cfg, loader)
    return loader


def _task_id(name: str) -> TaskId:
    from metatrade.data.naming import parse_task_id

    return parse_task_id(name)


def _write_generated(cfg: RunConfig, folder: Path) -> None:
    """Write the run's synthetic tasks into ``folder`` whole or not at all: into a temporary
    sibling, then renamed into place (an interrupted run used to leave a folder of some
    bar files and no market description, which every later run refused). If another process
    put the folder in place first, its copy (the same tasks: deterministic) is kept."""
    d = cfg.data
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        if d.regimes is not None:
            from metatrade.data.regimes import write_regime_sets

            write_regime_sets(tmp, regime_sets(cfg), d.regimes)
        else:
            from metatrade.data.synthetic import write_synthetic_tasks

            write_synthetic_tasks(tmp, d.num_synthetic_tasks, cfg.run.seed, n_bars=d.synthetic_bars)
        if folder.is_dir() and (not any(folder.iterdir()) or _incomplete(folder)):
            shutil.rmtree(folder)  # empty, or an older version's interrupted generation
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _writes_synthetic(folder):  # another process finished first
                return
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _incomplete(folder: Path) -> bool:
    """A folder the run generates holding files but no sidecar (its last write): what an
    interrupted generation of versions before the atomic write left."""
    from metatrade.data.synthetic import PARAMS_FILE

    return folder.is_dir() and any(folder.iterdir()) and not (folder / PARAMS_FILE).is_file()


def _writes_synthetic(folder: Path) -> bool:
    """Generate synthetic tasks into ``folder`` only when it holds no data yet: a user's
    folder of OHLCV files (``--data``) is read, never written into."""
    from metatrade.data.naming import data_files
    from metatrade.data.synthetic import PARAMS_FILE

    if (folder / PARAMS_FILE).is_file():
        return False
    return not (folder.is_dir() and data_files(folder))


# Name prefixes of the regime family's task sets: meta-training tasks, then the held-out sets.
SET_PREFIX = {"train": "Reg", "validation": "Val", "test": "Test"}


def regime_sets(cfg: RunConfig) -> list[Any]:
    """The task sets a regime-family run writes: ``num_synthetic_tasks`` training tasks from
    ``run.seed``, and ``data.synthetic_eval`` held-out tasks from a seed of their own."""
    from metatrade.data.regimes import RegimeSet, set_seed

    d, ev = cfg.data, cfg.data.synthetic_eval
    sets = [RegimeSet(SET_PREFIX["train"], d.num_synthetic_tasks, cfg.run.seed, d.synthetic_bars)]
    if ev.tasks:
        seed = set_seed(cfg.run.seed, ev.task_set)
        bars = ev.bars or d.synthetic_bars
        # one weekday apart: each held-out task's test windows fall on days of their own
        sets.append(RegimeSet(SET_PREFIX[ev.task_set], ev.tasks, seed, bars, stagger=1))
    return sets


def _synthetic_heldout(cfg: RunConfig, folder: Path) -> list[tuple[str, str]]:
    """The held-out tasks of a generated folder: the last ``data.synthetic_heldout`` generated
    training tasks and every ``data.synthetic_eval`` task (none in a user's data folder)."""
    from metatrade.data.synthetic import PARAMS_FILE, load_synthetic_params

    n, ev = cfg.data.synthetic_heldout, cfg.data.synthetic_eval
    if ev.tasks and cfg.data.regimes is None:
        raise ConfigError("data.synthetic_eval: held-out sets of their own need data.regimes")
    if not (n or ev.tasks) or not (folder / PARAMS_FILE).is_file():
        return []
    generated = list(load_synthetic_params(folder))
    prefix = SET_PREFIX[ev.task_set] if ev.tasks else None
    own = [_pair(t) for t in generated if prefix and t.instrument.startswith(prefix)]
    trained = [t for t in generated if _pair(t) not in own]
    if n >= len(trained) and n:
        raise ConfigError(
            f"data.synthetic_heldout={n}: must be below data.num_synthetic_tasks={len(trained)}"
        )
    last = [_pair(t) for t in trained[len(trained) - n :]] if n else []
    return last + own


def _pair(task: TaskId) -> tuple[str, str]:
    """(instrument, timeframe) as the plain tuple ``HeldOut.tasks`` holds."""
    return (task.instrument, task.timeframe)


def _refuse_short(cfg: RunConfig, loader: DataLoader, tasks: Collection[TaskId]) -> None:
    """``ConfigError`` naming ``env.lookback`` when ``tasks`` were dropped as too short for
    it, with the longest lookback that would keep every one of them."""
    short = {t: loader.too_short[t] for t in tasks if t in loader.too_short}
    if not short:
        return
    from metatrade.data.features import feature_warmup_rows

    warmup = feature_warmup_rows()
    task, bars = min(short.items(), key=lambda kv: kv[1])
    longest = bars - warmup - 1
    names = ", ".join(str(t) for t in sorted(short, key=str)[:6])
    fix = (
        f"use env.lookback <= {longest}"
        if longest >= 1
        else "add history to the file or leave the task out"
    )
    raise ConfigError(
        f"env.lookback: {cfg.env.lookback} bars do not fit {names}: one observation needs "
        f"{warmup} feature warm-up bars + the lookback + 1 bar, and {task} has {bars} bars; "
        f"{fix}"
    )


def check_named_tasks(cfg: RunConfig, loader: DataLoader) -> None:
    """``ConfigError`` for a task, held-out instrument or timeframe the folder does not hold
    (naming ``env.lookback`` when the lookback is what made its file unusable)."""
    from metatrade.data.naming import timeframe_sort_key
    from metatrade.errors import DataError

    d = cfg.data
    try:
        available = loader.get_available_tasks()
    except DataError:  # nothing usable (or strict): say so if the lookback is the reason
        _refuse_short(cfg, loader, list(loader.too_short))
        raise
    names = {str(t) for t in available}
    instruments = sorted({t.instrument for t in available})
    timeframes = sorted({t.timeframe for t in available}, key=timeframe_sort_key)
    where = f"in {loader.data_dir}" + (
        f" (skipped: {', '.join(loader.skipped)})" if loader.skipped else ""
    )
    listing = ", ".join(str(t) for t in available[:12]) + (", ..." if len(available) > 12 else "")
    for key, wanted in (("data.tasks", d.tasks or []), ("data.heldout.tasks", d.heldout.tasks)):
        missing = [t for t in wanted if str(_task_id(t)) not in names]
        _refuse_short(cfg, loader, [_task_id(t) for t in missing])
        if missing:
            raise ConfigError(
                f"{key} (--tasks): {', '.join(missing)} not found {where}; available: {listing}"
            )
    bad = [i for i in d.heldout.instruments if i not in instruments]
    if bad:
        raise ConfigError(
            f"data.heldout.instruments: {', '.join(bad)} matches no task {where}; "
            f"instruments: {', '.join(instruments)}"
        )
    bad = [str(t) for t in d.heldout.timeframes if str(t) not in timeframes]
    if bad:
        raise ConfigError(
            f"data.heldout.timeframes: {', '.join(bad)} matches no task {where}; "
            f"timeframes: {', '.join(timeframes)}"
        )


def check_episodes_fit(cfg: RunConfig, loader: DataLoader, tasks: Collection[TaskId]) -> None:
    """``ConfigError`` naming ``env.episode_length`` (and ``env.lookback``) when a task's
    train split is too short for one episode (``market.config.episode_bounds``' rule: the
    lookback's earlier rows, then ``episode_length`` steps and one more bar), with the
    longest values that fit every task."""
    lookback, length = cfg.env.lookback, cfg.env.episode_length
    rooms = []
    for t in tasks:
        lo, hi = loader.get_task_arrays(*t).splits["train"]
        rooms.append((hi - 1 - max(lo, lookback - 1), t, hi - lo, hi))
    if not rooms or min(rooms)[0] >= length:
        return
    room, task, rows, hi = min(rooms)
    fixes = [f"env.episode_length <= {room}"] if room >= 1 else []
    if hi - length >= 1 and hi - length < lookback:  # a shorter lookback would make room
        fixes.append(f"env.lookback <= {min(hi - length for *_, hi in rooms)}")
    fix = " or ".join(fixes) or "a longer train split (data.splits) or more history"
    raise ConfigError(
        f"env.episode_length: {length} bars (after env.lookback {lookback}) do not fit the "
        f"train split of {task} ({rows} rows); use {fix}"
    )


def task_pool(cfg: RunConfig, loader: DataLoader, task_set: str) -> list[TaskId]:
    """A task set ("train" or "test"), restricted to ``data.tasks`` when set."""
    pool = loader.tasks(task_set)
    if cfg.data.tasks is not None:
        wanted = {_task_id(t) for t in cfg.data.tasks}
        pool = [t for t in pool if t in wanted]
    return pool


class TaskSubset:
    """A DataLoader seen through ``data.tasks``: task sets restricted to the listed tasks.

    Implements what ``TradingTaskFamily`` needs (``sample_tasks``, ``get_task_arrays``) and
    samples with the loader's own balanced scheme, so an unrestricted run and a run listing
    every task draw the same tasks.
    """

    def __init__(self, loader: DataLoader, train: list[TaskId], test: list[TaskId]) -> None:
        self.loader = loader
        self.pools = {"train": list(train), "test": list(test), "all": [*train, *test]}

    def tasks(self, task_set: str = "train") -> list[TaskId]:
        return list(self.pools[task_set])

    def sample_tasks(
        self, n: int, *, task_set: str = "train", rng: np.random.Generator | int | None = None
    ) -> list[TaskId]:
        from metatrade.data.sampling import balanced_sample

        pool = self.pools.get(task_set)
        if not pool:
            raise ConfigError(
                f"no {task_set!r} tasks among data.tasks after data.heldout; "
                "list more tasks or change the held-out set"
            )
        return balanced_sample(pool, n, rng)

    def get_task_arrays(self, instrument: str, timeframe: str) -> TaskArrays:
        return self.loader.get_task_arrays(instrument, timeframe)

    def get_task_data(self, instrument: str, timeframe: str) -> pd.DataFrame:
        return self.loader.get_task_data(instrument, timeframe)


def task_source(cfg: RunConfig, loader: DataLoader) -> DataLoader | TaskSubset:
    """The loader, or a ``TaskSubset`` of it when ``data.tasks`` lists tasks."""
    if cfg.data.tasks is None:
        return loader
    return TaskSubset(loader, task_pool(cfg, loader, "train"), task_pool(cfg, loader, "test"))


def training_task_names(family: Any) -> list[str] | None:
    """The exact meta-training tasks of a trading family ("Instrument:TF", sorted), what a
    run checkpoint records so evaluation can refuse them; None for other families."""
    source = getattr(family, "loader", None)
    if source is None or not hasattr(source, "tasks"):
        return None
    return sorted(str(t) for t in source.tasks("train"))


def check_unseen(
    tasks: list[TaskId], trained: Collection[str] | None, *, allow_seen: bool = False
) -> list[str]:
    """Evaluation tasks the run meta-trained on: ``ConfigError`` unless ``allow_seen``
    (then returned, for the table to flag). ``trained`` None: unknown, nothing checked."""
    seen = sorted(str(t) for t in tasks if trained is not None and str(t) in set(trained))
    if seen and not allow_seen:
        raise ConfigError(
            f"{', '.join(seen)}: the run meta-trained on these task(s), so an evaluation on "
            "them measures memory, not adaptation; name held-out tasks with --tasks (adapt, "
            "backtest and evaluate also take --allow-seen: evaluated anyway, flagged)"
        )
    return seen


def eval_tasks(
    cfg: RunConfig,
    loader: DataLoader,
    *,
    trained: Collection[str] | None = None,
    allow_seen: bool = False,
) -> list[TaskId]:
    """Held-out tasks (the "test" task set), restricted to ``data.tasks`` when that lists
    some of them (a run trained on a few listed tasks is evaluated on every held-out task).
    Tasks in ``trained`` (the run's meta-training tasks) are refused: ``check_unseen``."""
    tasks = task_pool(cfg, loader, "test") or loader.tasks("test")
    if not tasks:
        raise ConfigError(
            "no held-out tasks to evaluate: set data.heldout in the config or pass --tasks"
        )
    check_unseen(tasks, trained, allow_seen=allow_seen)
    return tasks
