"""The day bootstrap: whole trading days resampled jointly across every task, blocks from
arch's optimal block length, and intervals that widen (and cover) when tasks share days,
where the old independent-task bootstrap is far too narrow."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from market_helpers import make_task_arrays
from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data.calendar import assign_sessions, resolve_calendar, session_ends
from metatrade.data.task_arrays import TaskArrays
from metatrade.evaluation import protocol
from metatrade.evaluation.bootstrap import (
    MIN_BLOCKS,
    BlockPlan,
    block_length,
    day_bootstrap_means,
    day_resample_counts,
    hierarchical_bootstrap_means,
    percentile_interval,
    session_dates,
)
from metatrade.market.config import TradingEnvConfig
from metatrade.training.config import load_config
from metatrade.training.task_sets import make_loader


def _shared_days(
    rng: np.random.Generator, tasks: int = 9, windows: int = 16, days: int = 40, span: int = 1
):
    """Timeframes of one instrument: every task's windows start on days of one calendar,
    last ``span`` days and earn the market's mean move over them plus a little noise of
    their own (windows of one task overlap, as test windows do). True mean 0."""
    factor = rng.normal(0.0, 1.0, days + span)
    day = rng.integers(0, days, size=(tasks, windows))
    moves = np.stack([factor[day + j] for j in range(span)]).mean(0)
    values = moves + 0.2 * rng.normal(size=(tasks, windows))
    return values, day


def test_a_drawn_day_brings_the_windows_of_every_task_on_it() -> None:
    rng = np.random.default_rng(0)
    values, day = _shared_days(rng, tasks=1)
    one, plan1 = day_bootstrap_means(
        values, day, resample_tasks=False, num_resamples=300, rng=np.random.default_rng(4)
    )
    # a second timeframe on the same days moving with the first, 0.5 higher: resampling
    # the days jointly moves both together, so every replicate is exactly 0.25 higher
    pair = np.concatenate([values, values + 0.5])
    both, plan2 = day_bootstrap_means(
        pair,
        np.concatenate([day, day]),
        resample_tasks=False,
        num_resamples=300,
        rng=np.random.default_rng(4),
    )
    assert plan1 == plan2
    np.testing.assert_allclose(both, one + 0.25, atol=1e-12)
    # the old bootstrap resamples the two tasks independently: not the same day draw
    old = hierarchical_bootstrap_means(pair, num_resamples=300, rng=np.random.default_rng(4))
    assert np.abs(old - (one + 0.25)).max() > 0.1


def _neighbour_correlation(counts: np.ndarray) -> float:
    """Mean correlation, over resamples, of how often day d and day d + 1 were drawn."""
    a, b = counts[:, :-1] - counts.mean(), counts[:, 1:] - counts.mean()
    return float((a * b).mean() / counts.var())


def test_resampled_days_come_in_stationary_blocks() -> None:
    blocks = day_resample_counts(50, block=5.0, num_resamples=400, rng=np.random.default_rng(1))
    single = day_resample_counts(50, block=1.0, num_resamples=400, rng=np.random.default_rng(1))
    assert blocks.shape == (400, 50) and (blocks.sum(1) == 50).all()
    # a drawn day brings its neighbours: counts of adjacent days move together
    assert _neighbour_correlation(blocks) > 0.5 > 0.1 > abs(_neighbour_correlation(single))


def test_intervals_widen_and_cover_when_tasks_share_days() -> None:
    # 9 timeframes of one market, 16 windows each of 4 days over 80 days. Measured (seed
    # 2, 120 data sets): days then tasks is 1.8x wider than the old tasks-then-windows
    # bootstrap and covers the true mean 90% of the time, days alone 83%, the old one 67%
    # (~20 independent blocks: hence the warning under 30).
    rng = np.random.default_rng(2)
    trials, hits, ratios = 120, np.zeros(3), []
    for _ in range(trials):
        values, day = _shared_days(rng, days=80, span=4)
        both, _ = day_bootstrap_means(values, day, min_block=4, num_resamples=300, rng=rng)
        days_only, _ = day_bootstrap_means(
            values, day, min_block=4, resample_tasks=False, num_resamples=300, rng=rng
        )
        old = hierarchical_bootstrap_means(values, num_resamples=300, rng=rng)
        cis = [percentile_interval(r, float(values.mean())) for r in (both, days_only, old)]
        hits += [ci.contains(0.0) for ci in cis]
        ratios.append(cis[0].half_width / cis[2].half_width)
    cover_both, cover_days, cover_old = hits / trials
    assert np.median(ratios) > 1.5  # 9 timeframes of one market are not 9 samples
    assert cover_both >= 0.85 and cover_both >= cover_days
    assert cover_old < cover_both - 0.15


def test_block_length_follows_the_dependence_and_warns_under_30_blocks() -> None:
    rng = np.random.default_rng(3)
    iid = rng.normal(size=400)
    ar = np.zeros(400)
    for t in range(1, 400):
        ar[t] = 0.9 * ar[t - 1] + rng.normal()
    assert block_length(iid) < 3.0 < block_length(ar)
    assert block_length(np.zeros(50), floor=2.0) == 2.0  # a constant series: the floor
    assert block_length(iid[:5], floor=1.5) == 1.5  # too short to estimate
    assert BlockPlan(2.0, 2 * MIN_BLOCKS).warning is None
    warning = BlockPlan(4.0, 40).warning
    assert warning is not None and "10.0 independent blocks" in warning


def _arrays_in(calendar: str, stamps: list[str]) -> TaskArrays:
    """Hand-made arrays whose ``sessions`` come from ``calendar`` (as a loader's do)."""
    ts = np.asarray(pd.DatetimeIndex(stamps).as_unit("ns").asi8, dtype=np.int64)
    cal = resolve_calendar(calendar)
    arrays = make_task_arrays(n=len(ts))
    labels = assign_sessions(ts, cal, cal.tz).label
    return replace(arrays, timestamps=ts, sessions=labels, session_end=session_ends(labels))


def test_session_dates_are_the_calendars_sessions() -> None:
    # NSE: 03:45 UTC is 09:15 in Kolkata, 09:55 UTC 15:25 the same day; the next morning is
    # the next session
    nse = _arrays_in("NSE", ["2024-03-19 03:45", "2024-03-19 09:55", "2024-03-20 03:45"])
    assert [str(d) for d in session_dates(nse)] == ["2024-03-19", "2024-03-19", "2024-03-20"]
    # FX (24/5): the day ends at 17:00 New York, so Sunday 22:00 UTC trades in Monday's
    # session and Monday 23:00 UTC (18:00 New York) in Tuesday's; neither UTC nor Kolkata
    # midnight is a boundary (their dates would split or shift these days)
    fx = _arrays_in(
        "24/5", ["2024-01-07 22:00", "2024-01-08 03:00", "2024-01-08 20:00", "2024-01-08 23:00"]
    )
    days = [str(d) for d in session_dates(fx)]
    assert days == ["2024-01-08", "2024-01-08", "2024-01-08", "2024-01-09"]


def test_bad_days_are_named() -> None:
    with pytest.raises(ValueError, match="days shaped"):
        day_bootstrap_means(np.zeros((2, 3)), np.zeros((2, 4)), rng=np.random.default_rng(0))


def test_resampling_tasks_too_counts_their_differences() -> None:
    # two timeframes on the same days, one always earning 0, the other 1: days alone cannot
    # move their mean (0.5), drawing the tasks as well can (0, 0.5 or 1)
    rng = np.random.default_rng(5)
    day = np.tile(np.arange(12), (2, 1))
    values = np.stack([np.zeros(12), np.ones(12)])
    days_only, _ = day_bootstrap_means(
        values, day, resample_tasks=False, num_resamples=400, rng=rng
    )
    both, _ = day_bootstrap_means(values, day, num_resamples=400, rng=rng)
    np.testing.assert_allclose(days_only, 0.5)
    assert set(np.unique(both)) == {0.0, 0.5, 1.0}


def test_the_protocol_draws_the_days_of_every_task_and_instrument_together(monkeypatch) -> None:
    """The meta-test protocol on real bars (two timeframes of Nifty, one of Finnifty, all on
    the NSE calendar): the day each test window is filed under is its first bar's session
    date, one label per calendar day whatever the task, so a drawn day brings the windows of
    every timeframe of an instrument, and of the other instrument, on that day."""

    seen: dict[str, np.ndarray] = {}
    real = protocol.day_bootstrap_means

    def spy(values, days, **kw):
        seen["days"] = np.asarray(days)
        return real(values, days, **kw)

    monkeypatch.setattr(protocol, "day_bootstrap_means", spy)
    torch.set_num_threads(1)
    loader = make_loader(load_config("tiny"))
    arrays = [loader.get_task_arrays(i, tf) for i, tf in [("Nifty", "60"), ("Nifty", "30")]]
    arrays.append(loader.get_task_arrays("Finnifty", "60"))
    obs = gym.spaces.Box(-np.inf, np.inf, (4 * arrays[0].num_features + 4,))
    pol = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(4,)), obs, gym.spaces.Discrete(5), seed=1
    )
    cfg = protocol.ProtocolConfig(
        adaptation_steps=(0,),
        adaptation_episodes=1,
        test_episodes=12,
        episode_length=8,
        test_episode_length=8,
        env=TradingEnvConfig(lookback=4),
        bootstrap_samples=50,
        backtest=False,
        references=(),
    )
    start = protocol.Start(pol, protocol.module_params(pol))
    protocol.MetaTestProtocol(cfg).run({"MAML": start}, arrays)
    days = seen["days"]
    assert days.shape == (3, 12) and days.dtype == np.dtype("datetime64[D]")
    for a, d in zip(arrays, days, strict=True):
        lo, hi = a.split_range("test")
        first = pd.to_datetime(a.timestamps[lo], utc=True).tz_convert("Asia/Kolkata").date()
        last = pd.to_datetime(a.timestamps[hi - 1], utc=True).tz_convert("Asia/Kolkata").date()
        assert (d >= np.datetime64(first)).all() and (d <= np.datetime64(last)).all()
    # the two timeframes of Nifty, and Nifty and Finnifty, share days: one label each
    assert set(days[0]) & set(days[1]) and set(days[0]) & set(days[2])
    assert len(np.unique(days)) < days.size
