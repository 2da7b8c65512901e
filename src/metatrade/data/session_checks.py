"""Checks of a file's bars against its instrument's calendar (behind
``validation.check_file``): the spacing the file name says, counted in sessions; daily
stamps that a time zone mix-up moved; bars on days the calendar lists as closed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metatrade.data.calendar import Sessions
from metatrade.data.checks import Collector, utc_index
from metatrade.data.naming import Timeframe, parse_task_name, parse_timeframe


def check_spacing(out: Collector, path: Path, ts: np.ndarray, sessions: Sessions) -> None:
    """Bars must be spaced as the file name says, counted in the calendar's sessions: the
    usual gap within a session is the minutes of an intraday name, and a ``<N>D`` / ``<N>W``
    file has one bar per N sessions / N weeks (daily bars named ``_5`` are refused)."""
    try:
        task = parse_task_name(path)
    except ValueError:
        return  # reported already
    tf = parse_timeframe(task.timeframe)
    if len(ts) < 3:
        return
    same = sessions.label[1:] == sessions.label[:-1]
    n_sessions = len(np.unique(sessions.label))
    gaps = ((ts[1:] - ts[:-1])[same] // 60_000_000_000).astype(np.int64)
    usual = int(np.bincount(gaps).argmax()) if len(gaps) else None
    daily_like = len(gaps) < 0.5 * n_sessions
    rename = f"rename it {task.instrument}_{{}}{path.suffix}"
    if tf.intraday and daily_like:
        out.whole(
            f"bars come one per trading session (daily or coarser), but the file name says "
            f"{tf.count} minutes; {rename.format('1D')} (or _1W for weekly bars)",
            field="datetime",
        )
    elif tf.intraday and usual != tf.count:
        out.whole(
            f"bars are usually {usual} minutes apart within a session, but the file name says "
            f"{tf.count}; {rename.format(usual)} or resample the bars to {tf.count} minutes",
            field="datetime",
        )
    elif not tf.intraday and not daily_like:
        out.whole(
            f"bars are usually {usual} minutes apart within a session, but the file name says "
            f"{tf} (one bar per {'session' if tf.unit == 'D' else 'week'}); "
            f"{rename.format(usual)} or resample the bars to {tf}",
            field="datetime",
        )
    elif not tf.intraday:
        _check_coarse_step(out, sessions, tf, rename)


def _check_coarse_step(out: Collector, sessions: Sessions, tf: Timeframe, rename: str) -> None:
    """Daily / weekly files: the usual step between bars is N sessions (D) or N weeks (W)."""
    days = np.diff(np.unique(sessions.label))
    weeks = max(1, int(np.round(np.median(days) / 7))) if len(days) else tf.count
    is_weekly = len(days) > 0 and np.median(days) >= 5
    if tf.unit == "D" and is_weekly:
        out.whole(
            f"bars are usually {int(np.median(days))} days apart (weekly bars), but the file "
            f"name says {tf}; {rename.format(f'{weeks}W')}",
            field="datetime",
        )
    elif tf.unit == "W" and not is_weekly:
        out.whole(
            f"bars come about one per session (daily bars), but the file name says {tf}; "
            f"{rename.format('1D')}",
            field="datetime",
        )


def check_daily_stamps(out: Collector, ts: np.ndarray, sessions: Sessions, tz: str) -> None:
    """Daily and weekly bars label a date: stamped at midnight or inside their session. Most
    bars stamped after their session's close is a zone mix-up (dates at midnight UTC read in
    a zone west of UTC land on the evening before): an error, since every trading day would
    be off by one."""
    local = utc_index(ts, tz)
    midnight = (local.hour == 0) & (local.minute == 0)
    late = (ts > sessions.close) & ~np.asarray(midnight)
    if late.sum() * 2 <= len(ts):
        return
    first = local[np.argmax(late)].strftime("%Y-%m-%d %H:%M")
    out.whole(
        f"{int(late.sum())} of {len(ts)} daily bars are stamped after their session's close "
        f"(e.g. {first} {tz}): dates written at midnight UTC and read in {tz} land on the "
        "evening before; set timezone: UTC for this instrument in instruments.yaml (or write "
        "the dates as YYYY-MM-DD)",
        field="datetime",
    )


def check_closed_days(
    out: Collector, sessions: Sessions, calendar: str, special: tuple[int, ...] = ()
) -> None:
    """Bars on days the calendar lists as closed and the description does not list as
    ``special_sessions``. A few are special sessions (kept as their own trading day, a
    warning); most of a file is a time zone or calendar mix-up (an error: every clock-based
    figure would be wrong)."""
    first = np.ones(len(sessions.label), dtype=bool)
    first[1:] = sessions.label[1:] != sessions.label[:-1]
    closed = np.unique(sessions.label[first & ~sessions.scheduled])
    closed = closed[~np.isin(closed, np.asarray(special, dtype=np.int64))]
    if not len(closed):
        return
    total = len(np.unique(sessions.label))
    shown = ", ".join(str(np.datetime64(int(d), "D")) for d in closed[:5])
    more = f" and {len(closed) - 5} more" if len(closed) > 5 else ""
    if len(closed) * 2 > total:
        out.whole(
            f"{len(closed)} of {total} trading days fall on days the {calendar} calendar lists "
            f"as closed ({shown}{more}): the timestamps are in another time zone than the "
            "instrument's (daily bars stamped at UTC midnight: timezone: UTC in "
            "instruments.yaml) or the calendar is not this market's",
            field="datetime",
        )
    else:
        out.whole(
            f"bars on {len(closed)} day(s) the {calendar} calendar lists as closed ({shown}"
            f"{more}); each is kept as its own session: list the dates as special_sessions "
            "in instruments.yaml if the exchange traded then (Muhurat trading, a Saturday "
            "session), else remove those bars",
            field="datetime",
            level="warning",
        )
