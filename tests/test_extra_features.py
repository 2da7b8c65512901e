"""The optional features of ``metatrade.data.extra_features``: causal, defined after the
warm-up, and each carrying the structure it is named for."""

from __future__ import annotations

import numpy as np
import pytest

from metatrade.data.extra_features import EXTRA_FEATURES, BarView, extra_features
from metatrade.data.regimes import TaskRule, generate_task

ALL = tuple(EXTRA_FEATURES)


def _view(rule: TaskRule, n: int = 1500) -> BarView:
    bars, _ = generate_task(rule, n)
    return BarView(
        open=bars["open"].to_numpy(),
        close=bars["close"].to_numpy(),
        timestamps=bars.index.as_unit("ns").asi8,
        bar_minutes=5,
    )


NOISE = TaskRule("noise", 1e-3, {}, overnight_gap=3.0, seed=1)


def test_causal_and_defined_after_warmup() -> None:
    view = _view(NOISE)
    x, cols = extra_features(ALL, view)
    assert x.shape == (1500, len(cols)) and len(cols) == len(set(cols)) == 17
    assert np.isfinite(x[48:]).all()
    cut = 900
    close = view.close.copy()
    close[cut + 1 :] *= np.exp(np.random.default_rng(0).normal(0, 0.01, 1500 - cut - 1))
    factor = np.r_[np.ones(cut + 1), close[cut + 1 :] / view.close[cut + 1 :]]
    moved = BarView(view.open * factor, close, view.timestamps, 5)  # bars after the cut move
    y, _ = extra_features(ALL, moved)
    np.testing.assert_array_equal(x[48 : cut + 1], y[48 : cut + 1])
    assert not np.allclose(x[cut + 1 :], y[cut + 1 :])


def test_next_sixth_is_the_holding_bars_place_in_the_session() -> None:
    view = _view(NOISE, 200)
    x, _ = extra_features(("next_sixth",), view)
    assert (x.sum(1) == 1).all()
    # bar 0 starts 09:15, holds 09:20 (sixth 0); bar 12 (10:15) holds 10:20, 65 min in: 1;
    # bar 74 (15:25) is the session's last: its position is held over the next 09:15 bar
    assert x[0].argmax() == 0 and x[12].argmax() == 1 and x[74].argmax() == 0
    assert x[73].argmax() == 5


def test_open_gap_decay_holds_todays_gap() -> None:
    view = _view(NOISE, 300)
    x, _ = extra_features(("open_gap_decay_3",), view)
    gap = np.log(view.open[75] / view.close[74])  # day 2 opens at row 75
    assert gap != 0
    assert x[75, 0] == pytest.approx(gap)
    assert x[78, 0] == pytest.approx(gap * np.exp(-1.0))


@pytest.mark.parametrize("phi", [0.4, -0.4])
def test_ret_x_autocorr_predicts_with_either_sign(phi: float) -> None:
    """The last return times its recent autocorrelation covaries positively with the next
    return for momentum and for reversal alike (the sign comes with the feature)."""
    view = _view(TaskRule("ar", 1e-3, {"phi": phi, "lags": 1}, seed=3), 20_000)
    x, _ = extra_features(("ret_x_autocorr_32", "logret_1_lag1"), view)
    r = view.logret
    assert np.nanmean(x[48:-1, 0] * r[49:]) > 0
    lag = np.corrcoef(x[48:-1, 1], r[48:-1])[0, 1]  # lag1 at t is the return at t-1
    assert np.sign(lag) == np.sign(phi)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(KeyError, match="next_sixth"):
        extra_features(("next_tenth",), _view(NOISE, 100))
