"""The registered features of ``metatrade.data.extra_features``: in the one feature registry
(selectable by name or group), causal, defined after the warm-up, read from the market's
calendar, and each carrying the structure it is named for."""

from __future__ import annotations

import numpy as np
import pytest

from metatrade.data.calendar import assign_sessions
from metatrade.data.features import (
    all_raw_features,
    available_features,
    check_feature_names,
    expand_feature_names,
    feature_group,
)
from metatrade.data.instruments import build_instrument
from metatrade.data.regimes import TaskRule, generate_task
from metatrade.data.synthetic import SYNTHETIC_MARKET

EXTRAS = (
    *(f"next_sixth_{i}" for i in range(6)),
    "open_gap_decay_3",
    "open_gap_decay_12",
    "ret_x_volratio",
    "ret_x_autocorr_32",
    "tod_drift_512",
)
NOISE = TaskRule("noise", 1e-3, {}, overnight_gap=3.0, seed=1)


def _raw(o, c, ts, market=SYNTHETIC_MARKET) -> dict[str, np.ndarray]:
    """Every registered extra of the bars (unnormalised), by name."""
    inst = build_instrument("X", market, where="test", tables={})
    sessions = assign_sessions(ts, inst.calendar, inst.timezone)
    raw = all_raw_features(o, c, c, c, ts, bar_minutes=5, sessions=sessions)
    names = available_features()
    return {n: raw[:, names.index(n)] for n in EXTRAS}


def _bars(rule: TaskRule, n: int):
    bars, _ = generate_task(rule, n)
    return bars["open"].to_numpy(), bars["close"].to_numpy(), bars.index.as_unit("ns").asi8


def test_one_registry_names_and_groups() -> None:
    assert set(EXTRAS) <= set(available_features())
    assert expand_feature_names(["logret_1", "next_sixth", "open_gap_decay"]) == [
        "logret_1",
        *(f"next_sixth_{i}" for i in range(6)),
        "open_gap_decay_3",
        "open_gap_decay_12",
    ]
    assert {feature_group(f"next_sixth_{i}") for i in range(6)} == {"next_sixth"}
    assert feature_group("ret_x_volratio") == "ret_x_volratio"
    with pytest.raises(ValueError, match="did you mean next_sixth"):
        check_feature_names(["next_sixt"])


def test_causal_and_defined_after_warmup() -> None:
    o, c, ts = _bars(NOISE, 1500)
    x = np.stack(list(_raw(o, c, ts).values()), axis=1)
    assert np.isfinite(x[48:]).all()
    cut = 900
    factor = np.r_[np.ones(cut + 1), np.exp(np.random.default_rng(0).normal(0, 0.01, 599))]
    y = np.stack(list(_raw(o * factor, c * factor, ts).values()), axis=1)  # bars after the cut
    np.testing.assert_array_equal(x[48 : cut + 1], y[48 : cut + 1])
    assert not np.allclose(x[cut + 1 :], y[cut + 1 :])


def test_next_sixth_is_the_holding_bars_place_in_the_session() -> None:
    o, c, ts = _bars(NOISE, 200)
    f = _raw(o, c, ts)
    x = np.stack([f[f"next_sixth_{i}"] for i in range(6)], axis=1)
    assert (x.sum(1) == 1).all()
    # bar 0 starts 09:15, holds 09:20 (sixth 0); bar 12 (10:15) holds 10:20, 65 min in: 1;
    # bar 74 (15:25) is the session's last: its position is held over the next 09:15 bar
    assert x[0].argmax() == 0 and x[12].argmax() == 1 and x[74].argmax() == 0
    assert x[73].argmax() == 5


def test_next_sixth_reads_the_calendar_not_nse_hours() -> None:
    """The same bars in a market whose session is 09:15-21:30 (twice as long): the 10:15 bar
    holds a bar in the first sixth, not the second."""
    o, c, ts = _bars(NOISE, 200)
    long = {**SYNTHETIC_MARKET, "calendar": {"open": "09:15", "close": "21:45"}}
    f = _raw(o, c, ts, long)
    assert f["next_sixth_0"][12] == 1 and f["next_sixth_1"][12] == 0


def test_open_gap_decay_holds_todays_gap() -> None:
    o, c, ts = _bars(NOISE, 300)
    x = _raw(o, c, ts)["open_gap_decay_3"]
    gap = np.log(o[75] / c[74])  # day 2 opens at row 75
    assert gap != 0
    assert x[75] == pytest.approx(gap)
    assert x[78] == pytest.approx(gap * np.exp(-1.0))


@pytest.mark.parametrize("phi", [0.4, -0.4])
def test_ret_x_autocorr_predicts_with_either_sign(phi: float) -> None:
    """The last return times its recent autocorrelation covaries positively with the next
    return for momentum and for reversal alike (the sign comes with the feature)."""
    o, c, ts = _bars(TaskRule("ar", 1e-3, {"phi": phi, "lags": 1}, seed=3), 20_000)
    x = _raw(o, c, ts)["ret_x_autocorr_32"]
    r = np.r_[np.nan, np.diff(np.log(c))]
    assert np.nanmean(x[48:-1] * r[49:]) > 0


def test_tod_drift_is_the_time_of_day_rules_estimate() -> None:
    """On a seasonal task (a drift per third of the session) the feature at bar t is the
    mean of the returns earned over the next bar's sixth in the last 512 bars, equal to a
    direct computation, and its sign is the true drift's on most bars."""
    rule = TaskRule("seasonal", 1e-3, {"drift": [0.3, -0.3, 0.2]}, seed=4)
    o, c, ts = _bars(rule, 3000)
    x = _raw(o, c, ts)["tod_drift_512"]
    ahead = np.argmax(np.stack([_raw(o, c, ts)[f"next_sixth_{i}"] for i in range(6)]), axis=0)
    held = np.r_[0, ahead[:-1]]
    r = np.r_[0.0, np.diff(np.log(c))]
    t = 2000
    window = slice(t - 511, t + 1)
    mine = held[window] == ahead[t]
    assert x[t] == pytest.approx(r[window][mine].mean())
    true = np.asarray([0.3, -0.3, 0.2])[np.minimum(ahead // 2, 2)]  # thirds = pairs of sixths
    assert np.mean(np.sign(x[600:]) == np.sign(true[600:])) > 0.9


def test_a_group_in_env_features_stands_for_its_columns_in_a_config() -> None:
    """configs/regimes.yaml names ``next_sixth``: the env section expands it before the
    base checks (each name once), and a group named twice is refused in one line."""
    from metatrade.errors import ConfigError
    from metatrade.training.config import validate_config

    cfg = validate_config({"env": {"features": ["logret_1", "next_sixth"]}})
    assert cfg.env.features == ("logret_1", *(f"next_sixth_{i}" for i in range(6)))
    with pytest.raises(ConfigError, match="env.features"):
        validate_config({"env": {"features": ["next_sixth", "next_sixth_2"]}})
