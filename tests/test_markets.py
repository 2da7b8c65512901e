"""Issue #20: any market, not only the NSE. Daily bars of a US index (XNYS), hourly bars of a
24/5 currency pair and 30-minute US bars, each described in instruments.yaml: the clock of
every figure (bars per year, trading days, square-off, time features, gaps) is the market's,
and the NSE's own figures stay as they were."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from instrument_helpers import write_us_fx_folder
from metatrade.cli import app
from metatrade.data import DataLoader, validate_folder
from metatrade.data.calendar import assign_sessions
from metatrade.data.features import FEATURE_NAMES, raw_features
from metatrade.data.instruments import InstrumentRegistry, Market
from metatrade.data.loader import SAMPLE_DIR
from metatrade.errors import DataError
from metatrade.evaluation.backtest import buy_and_hold, run_backtest
from metatrade.evaluation.protocol import Start, module_params
from metatrade.evaluation.walkforward import (
    FoldSpec,
    InnerLoopAdapter,
    WalkForwardConfig,
    load_tasks,
    run_walkforward,
)
from metatrade.market import Action, BacktestingEngine, InstrumentSpec, TradingEnv
from metatrade.market.config import TradingEnvConfig
from metatrade.market.costs import cost_model
from metatrade.meta.config import AdaptationConfig
from walkforward_helpers import tiny_policy

CAPITAL = 1e9  # whole units of a 1.10 EUR/USD or a 4,500 index: cash left over is negligible
SESSIONS_PER_YEAR = {"SPX": 252, "EURUSD": 260}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_us_fx_folder(tmp_path_factory.mktemp("markets") / "data")


@pytest.fixture(scope="module")
def loader(folder: Path) -> DataLoader:
    return DataLoader(folder, cache_dir=False)


def test_the_data_validates_and_each_market_has_its_clock(folder: Path, loader) -> None:
    assert validate_folder(folder) == []
    per_year = {str(t): loader.get_task_arrays(*t).bars_per_year for t in loader.tasks("all")}
    # 252 sessions x 1 daily bar; 260 FX sessions x 24 hours; 252 x ceil(390 / 30) = 13
    assert per_year == {"EURUSD:60": 6240, "SPX:1D": 252, "USIDX:30": 252 * 13}


def test_daily_bars_named_as_5_minute_bars_are_refused(folder: Path, tmp_path: Path) -> None:
    shutil.copy(folder / "SPX_1D.csv", tmp_path / "SPX_5.csv")
    shutil.copy(folder / "instruments.yaml", tmp_path)
    [problem] = validate_folder(tmp_path)
    assert problem.level == "error" and "one per trading session" in problem.message
    assert "rename it SPX_1D.csv" in problem.message
    with pytest.raises(DataError, match="SPX_1D.csv"):
        DataLoader(tmp_path, cache_dir=False, strict=True).get_available_tasks()


def test_weekly_bars_are_one_bar_per_week(folder: Path, tmp_path: Path) -> None:
    """Weekly bars (dated on Mondays, holidays included) validate as ``_1W`` with no gap or
    closed-day warning, annualise by 52, and are refused under a daily name."""
    daily = pd.read_csv(folder / "SPX_1D.csv", parse_dates=["datetime"]).set_index("datetime")
    weekly = daily.resample("W-MON", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last"}
    )
    weekly.dropna().to_csv(tmp_path / "SPX_1W.csv", date_format="%Y-%m-%d")
    shutil.copy(folder / "instruments.yaml", tmp_path)
    assert validate_folder(tmp_path) == []
    arrays = DataLoader(tmp_path, cache_dir=False).get_task_arrays("SPX", "1W")
    assert arrays.bars_per_year == 52 and arrays.market.session_returns_per_year == 52
    (tmp_path / "SPX_1W.csv").rename(tmp_path / "SPX_1D.csv")
    [problem] = [p for p in validate_folder(tmp_path) if p.level == "error"]
    assert "weekly bars" in problem.message and "rename it SPX_1W.csv" in problem.message


def test_daily_bars_stamped_at_utc_midnight_need_a_utc_timezone(folder, tmp_path) -> None:
    """Read in New York, midnight UTC is the evening before: refused with the fix; with
    ``timezone: UTC`` the same file is the same trading days as the dated one."""
    daily = pd.read_csv(folder / "SPX_1D.csv")
    stamps = pd.DatetimeIndex(daily["datetime"]).tz_localize("UTC")
    daily["datetime"] = stamps.as_unit("s").asi8  # epoch seconds of midnight UTC
    daily.to_csv(tmp_path / "SPX_1D.csv", index=False)
    shutil.copy(folder / "instruments.yaml", tmp_path)
    [problem] = validate_folder(tmp_path)
    assert "stamped after their session's close" in problem.message
    assert "set timezone: UTC" in problem.message
    fixed = DataLoader(tmp_path, cache_dir=False, instruments={"SPX": {"timezone": "UTC"}})
    ref = DataLoader(folder, cache_dir=False)
    utc, dated = fixed.get_task_arrays("SPX", "1D"), ref.get_task_arrays("SPX", "1D")
    assert np.array_equal(utc.sessions, dated.sessions)


def test_an_undescribed_instrument_is_refused_with_the_lines_to_add(folder, tmp_path) -> None:
    shutil.copy(folder / "SPX_1D.csv", tmp_path)
    with pytest.raises(DataError) as info:
        DataLoader(tmp_path, cache_dir=False)
    message = str(info.value)
    assert "'SPX' (SPX_1D.csv)" in message and "instruments: {SPX: {calendar:" in message
    assert "\n" not in message


def _session_returns(equity: np.ndarray, sessions: np.ndarray, c0: float) -> np.ndarray:
    """Returns from one session's last equity to the next one's (the first over ``c0``)."""
    last = np.flatnonzero(np.append(sessions[1:] != sessions[:-1], True))
    close = equity[last]
    return close / np.concatenate([[c0], close[:-1]]) - 1.0


def _buy_and_hold_equity(bars: pd.DataFrame, first: int, last: int) -> np.ndarray:
    """Equity of C0 flat at the close of bar ``first``, all in at the next open in whole
    units, marked at every close up to bar ``last`` (no costs)."""
    fill = bars["open"].iloc[first + 1]
    units = math.floor(CAPITAL / fill)
    marks = bars["close"].to_numpy()[first + 1 : last + 1]
    return np.concatenate([[CAPITAL], CAPITAL - units * fill + units * marks])


def _file_sessions(name: str, stamps: pd.DatetimeIndex) -> np.ndarray:
    """Trading day of each bar, from the market's convention alone: a US daily bar's date;
    an FX bar's New York date after the 17:00 roll."""
    if name == "SPX":
        days = stamps.tz_convert("America/New_York").normalize()
    else:
        days = (stamps.tz_convert("America/New_York") + pd.Timedelta(hours=7)).normalize()
    return np.asarray(days.tz_localize(None).as_unit("ns").asi8 // 86_400_000_000_000)


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = next(folder.glob(f"{name}_*.csv"))
    bars = pd.read_csv(path)
    if name == "SPX":  # the daily file's dates, read at midnight New York
        index = pd.DatetimeIndex(bars["datetime"]).tz_localize("America/New_York")
    else:
        index = pd.to_datetime(bars["datetime"], unit="s", utc=True)
    return bars.set_index(pd.DatetimeIndex(index).tz_convert("UTC"))


@pytest.mark.parametrize("name", ["SPX", "EURUSD"])
def test_buy_and_hold_sharpe_and_return_equal_a_direct_computation(folder, loader, name) -> None:
    """Backtest report (per bar) and walk-forward report (per session): buy-and-hold's Sharpe
    and annual return equal the same statistics computed here from the file alone."""
    bars = _read(folder, name)
    task = next(t for t in loader.tasks("all") if t.instrument == name)
    arrays = loader.get_task_arrays(*task)
    env = TradingEnvConfig(lookback=4, episode_length=16, initial_capital=CAPITAL)
    stamps = bars.index.as_unit("ns").asi8
    row = {t: i for i, t in enumerate(stamps)}
    per_session = SESSIONS_PER_YEAR[name]

    res = run_backtest(buy_and_hold(), arrays, split="test", config=env)
    first, last = row[int(res.timestamps[0])], row[int(res.timestamps[-1])]
    equity = _buy_and_hold_equity(bars, first, last)
    r = equity[1:] / equity[:-1] - 1.0
    per_bar = per_session * (24 if name == "EURUSD" else 1)
    assert res.metrics["bars_per_year"] == per_bar
    assert res.metrics["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * per_bar**0.5, 1e-6)
    annual = (equity[-1] / equity[0]) ** (per_bar / len(r)) - 1.0
    assert res.metrics["annual_return"] == pytest.approx(annual, rel=1e-6)

    policy = tiny_policy(4)
    adapter = InnerLoopAdapter(env, AdaptationConfig(episodes_per_task=2), steps=0)
    config = WalkForwardConfig(
        folds=FoldSpec(fold_bars=60, adapt_bars=40),
        env=env,
        references=("buy_and_hold",),
        bootstrap_samples=10,
    )
    [wf_task] = load_tasks(loader, [task])
    result = run_walkforward(
        {"MAML": Start(policy, module_params(policy))}, [wf_task], adapter, config
    )
    [record] = result.tasks
    first, last = row[int(record.timestamps[0])], row[int(record.timestamps[-1])]
    equity = _buy_and_hold_equity(bars, first, last)
    daily = _session_returns(equity, _file_sessions(name, bars.index[first : last + 1]), CAPITAL)
    metrics = result.scopes[str(task)].metrics["buy-and-hold"]
    assert metrics["days"] == len(daily)
    sharpe = daily.mean() / daily.std(ddof=1) * per_session**0.5
    assert metrics["sharpe"] == pytest.approx(sharpe, rel=1e-6)
    annual = (equity[-1] / CAPITAL) ** (per_session / len(daily)) - 1.0
    assert metrics["annual_return"] == pytest.approx(annual, rel=1e-6)


def test_fx_has_no_saturday_and_sunday_evening_is_monday(loader) -> None:
    arrays = loader.get_task_arrays("EURUSD", "60")
    weekday = (arrays.sessions + 3) % 7  # 1970-01-01 was a Thursday
    assert set(weekday.tolist()) == {0, 1, 2, 3, 4}
    sunday = pd.Timestamp("2024-01-14 22:00", tz="UTC").value  # 17:00 New York, a Sunday
    i = int(np.searchsorted(arrays.timestamps, sunday))
    assert arrays.timestamps[i] == sunday
    assert str(np.datetime64(int(arrays.sessions[i]), "D")) == "2024-01-15"
    # a trading day is 24 hourly bars, from 17:00 to 17:00 New York
    ends = np.flatnonzero(arrays.session_end[:-1])
    assert np.all(np.diff(ends) == 24)


def test_a_us_30_minute_task_squares_off_at_the_new_york_close(loader) -> None:
    arrays = loader.get_task_arrays("USIDX", "30")
    env = TradingEnv(
        arrays, TradingEnvConfig(lookback=4, episode_length=None, square_off=True, split="all")
    )
    env.reset()
    done, squared = False, []
    while not done:
        action = Action.BUY_LONG if env.engine.position == 0 else Action.HOLD
        _, _, terminated, truncated, info = env.step(int(action))
        if info["squared_off"]:
            squared.append(arrays.timestamps[info["bar"]])
        done = terminated or truncated
    # the squared-off bar is the session's last: it starts 15:30 and closes 16:00 New York,
    # in winter (EST) and summer (EDT) alike
    times = pd.DatetimeIndex(np.asarray(squared, dtype="M8[ns]")).tz_localize("UTC")
    ny = times.tz_convert("America/New_York")
    assert len(times) > 100 and set(ny.strftime("%H:%M")) == {"15:30"}
    assert {t.utcoffset().total_seconds() / 3600 for t in ny} == {-5.0, -4.0}


def test_time_features_are_in_the_exchange_local_time(loader) -> None:
    bars = loader.get_task_data("USIDX", "30")
    inst = loader.instrument("USIDX")
    ts = np.asarray(bars.index.as_unit("ns").asi8)
    sessions = assign_sessions(ts, inst.calendar, inst.timezone)
    cols = (bars[k].to_numpy() for k in ("open", "high", "low", "close"))
    raw = raw_features(*cols, ts, bar_minutes=30, sessions=sessions)
    since = raw[:, FEATURE_NAMES.index("minutes_since_open")]
    to_close = raw[:, FEATURE_NAMES.index("minutes_to_close")]
    local = bars.index.tz_convert("America/New_York")
    opening = local.strftime("%H:%M") == "09:30"
    assert opening.sum() > 50 and np.all(since[opening] == 0.0)  # EST and EDT alike
    assert np.allclose(since + to_close, 1.0 - 30 / 390)
    dow = raw[:, FEATURE_NAMES.index("day_of_week")]
    assert np.array_equal(dow, (local.day_of_week.to_numpy() - 2.0) / 2.0)
    # daily bars: no clock time inside a session, so no daylight-saving flag
    daily = loader.get_task_data("SPX", "1D")
    ts = np.asarray(daily.index.as_unit("ns").asi8)
    spx = loader.instrument("SPX")
    sessions = assign_sessions(ts, spx.calendar, spx.timezone)
    cols = (daily[k].to_numpy() for k in ("open", "high", "low", "close"))
    raw = raw_features(*cols, ts, bar_minutes=1440, sessions=sessions)
    assert not raw[:, FEATURE_NAMES.index("minutes_since_open")].any()
    assert not raw[:, FEATURE_NAMES.index("minutes_to_close")].any()


def test_nse_index_futures_round_trip_costs_equal_a_hand_computation() -> None:
    """One Nifty futures lot (75) bought at 22,000 and sold at 22,100, at the preset's
    rates (from 2024-10-01): brokerage 20 INR per order, exchange 0.00173%, SEBI 10 INR per
    crore, GST 18% on those three, stamp duty 0.002% on the buy, STT 0.02% on the sell."""
    eng = BacktestingEngine(
        5e6, cost_model("nse_index_futures"), InstrumentSpec("Nifty", lot_size=75)
    )
    eng.mark(22_000.0)
    assert eng.execute_trade(Action.BUY_LONG, 22_000.0, quantity=75).accepted
    eng.mark(22_050.0)
    [trade] = [eng.execute_trade(Action.CLOSE_LONG, 22_100.0).trade]
    buy, sell = 75 * 22_000.0, 75 * 22_100.0  # 16.5 and 16.575 lakh of notional
    buy_cost = 20 + buy * 0.0000173 + buy * 1e-6 + 0.18 * (20 + buy * 0.0000173 + buy * 1e-6)
    buy_cost += buy * 0.00002  # stamp duty
    sell_cost = 20 + sell * 0.0000173 + sell * 1e-6 + 0.18 * (20 + sell * 0.0000173 + sell * 1e-6)
    sell_cost += sell * 0.0002  # securities transaction tax
    assert buy_cost == pytest.approx(92.2301, abs=1e-9)
    assert sell_cost == pytest.approx(390.892055, abs=1e-9)
    assert trade.entry_cost == pytest.approx(buy_cost, rel=1e-12)
    assert trade.exit_cost == pytest.approx(sell_cost, rel=1e-12)
    assert trade.net_pnl == pytest.approx(75 * 100.0 - buy_cost - sell_cost, rel=1e-12)
    # a short pays the stamp duty on its exit (a buy) and the STT on its entry (a sell)
    eng.reset()
    eng.mark(22_000.0)
    eng.execute_trade(Action.SELL_SHORT, 22_000.0, quantity=75)
    short = eng.execute_trade(Action.CLOSE_SHORT, 22_100.0).trade
    assert short.entry_cost == pytest.approx(buy_cost - buy * 0.00002 + buy * 0.0002, rel=1e-12)


def test_a_dated_lot_table_sizes_each_entry_with_the_lot_then(folder) -> None:
    """The NSE revised Nifty's lot from 25 to 75 (near-month contract from 2024-12-27)."""
    loader = DataLoader(
        folder,
        cache_dir=False,
        instruments={"SPX": {"lot_size": [{"size": 25}, {"from": "2022-06-01", "size": 75}]}},
    )
    arrays = loader.get_task_arrays("SPX", "1D")
    env = TradingEnv(
        arrays, TradingEnvConfig(lookback=4, episode_length=None, split="all", initial_capital=2e6)
    )
    env.reset()
    sizes = {}
    for _ in range(len(arrays) - 6):
        action = Action.BUY_LONG if env.engine.position == 0 else Action.CLOSE_LONG
        _, _, _, truncated, info = env.step(int(action))
        if info["position"]:
            when = pd.Timestamp(int(arrays.timestamps[info["bar"]]), tz="UTC")
            sizes[when < pd.Timestamp("2022-06-01", tz="UTC")] = env.engine.quantity
        if truncated:
            break
    assert sizes[True] % 25 == 0 and sizes[False] % 75 == 0 and sizes[True] % 75 != 0


def test_the_commands_run_on_us_and_fx_data(folder: Path, tmp_path: Path) -> None:
    """`data validate`, `meta-train`, `evaluate`, `walkforward`, `signal` and `backtest` on the
    US and FX tasks (meta-trained on the US 30-minute task, evaluated on the others)."""
    runner = CliRunner()
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "tiny.yaml").read_text())
    config["data"] = {"tasks": None, "heldout": {"instruments": ["SPX", "EURUSD"]}}
    (tmp_path / "us.yaml").write_text(yaml.safe_dump(config))
    run, out = tmp_path / "run", {}
    for args in (
        ["data", "validate", str(folder)],
        [
            "meta-train",
            "-c",
            str(tmp_path / "us.yaml"),
            "--data",
            str(folder),
            "-n",
            "1",
            "--out",
            str(run),
            "--no-progress",
        ],
        ["evaluate", "--checkpoint", str(run)],
        [
            "walkforward",
            "--checkpoint",
            str(run),
            "--fold-bars",
            "60",
            "--adapt-bars",
            "40",
            "--out",
            str(tmp_path / "wf"),
        ],
        ["backtest", "--checkpoint", str(run), "--out", str(tmp_path / "bt")],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args[0], res.output)
        out[args[0]] = res.output
    assert "Held-out evaluation on EURUSD:60, SPX:1D" in out["evaluate"]
    assert "Market: XNYS, USD: 252 sessions/year / 1 session(s) a bar = 252 bars/year" in res.output
    assert "Market: 24/5, USD: 260 sessions/year x 24 bars/session = 6,240 bars/year" in res.output
    assert "Period (America/New_York)" in res.output and "Maximum Drawdown (USD)" in res.output
    rows = pd.read_csv(tmp_path / "wf" / "walkforward.csv")
    assert {"EURUSD:60", "SPX:1D"} <= set(rows.scope)
    res = runner.invoke(
        app,
        [
            "signal",
            "--checkpoint",
            str(run),
            "--fold-bars",
            "20",
            "--adapt-bars",
            "40",
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    signals = {s["task"]: s for s in json.loads(res.stdout)}
    assert signals["SPX:1D"]["last_bar"].endswith(("EST", "EDT"))  # New York time


@pytest.mark.parametrize("minutes", [2, 45, 240])
def test_the_embedded_nse_clock_is_the_origin_clock(minutes: int) -> None:
    """Under the NSE calendar the embedded tasks keep the origin's clock: trading days are
    the Asia/Kolkata dates, bars per year 252 x ceil(375 / minutes); their special sessions
    (a Saturday, Muhurat trading) are declared, so the sample validates without a problem."""
    loader = DataLoader(cache_dir=False)
    bars = loader.get_task_data("Nifty", str(minutes))
    nifty = loader.instrument("Nifty")
    ts = np.asarray(bars.index.as_unit("ns").asi8)
    sessions = assign_sessions(ts, nifty.calendar, nifty.timezone)
    local = bars.index.tz_convert("Asia/Kolkata").tz_localize(None).normalize()
    assert np.array_equal(sessions.label, local.as_unit("ns").asi8 // 86_400_000_000_000)
    market = Market.of(nifty, str(minutes), sessions)
    assert market.bars_per_year == 252 * math.ceil(375 / minutes)
    assert validate_folder(loader.task_path("Nifty", str(minutes))) == []
    futures = InstrumentRegistry(
        SAMPLE_DIR, overrides={"Nifty": {"lot_size": "nse_index_futures"}}
    ).get("Nifty")
    assert futures.lot_size.describe() == "50, 25 from 2024-04-26, 75 from 2024-12-27"


@pytest.mark.parametrize(
    ("desc", "names"),
    [
        ({"calendar": "XNYS", "currency": "USD", "cost": "bps"}, ["'cost'", "unknown key"]),
        ({"calendar": "NASDAQ-ish", "currency": "USD"}, ["'calendar'", "XNYS"]),
        ({"calendar": "XNYS"}, ["'currency'", "missing"]),
        ({"calendar": "XNYS", "currency": "USD", "costs": "cheap"}, ["'costs'", "nse_index"]),
        ({"calendar": "XNYS", "currency": "USD", "timezone": "Mars/Base"}, ["'timezone'"]),
        (
            {"calendar": "XNYS", "currency": "USD", "lot_size": [{"size": 5}, {"size": 10}]},
            ["'lot_size'", "'from' date"],
        ),
        ({"calendar": {"open": "9:30"}, "currency": "USD", "timezone": "UTC"}, ["close"]),
        ({"calendar": "XNYS", "currency": "USD", "square_off": "noon"}, ["session_end or none"]),
    ],
)
def test_a_bad_description_is_one_line_naming_the_key(tmp_path, desc, names) -> None:
    (tmp_path / "instruments.yaml").write_text(yaml.safe_dump({"instruments": {"SPX": desc}}))
    with pytest.raises(DataError) as info:
        InstrumentRegistry(tmp_path).get("SPX")
    message = str(info.value)
    assert "instruments.yaml: instrument 'SPX'" in message and "\n" not in message
    assert all(n in message for n in names), message
