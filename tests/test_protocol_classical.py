"""The classical rows of the meta-test protocol: fitted on the rows the starts adapt on,
traded on the same test windows (paired), scored against the oracle and MAML."""

from __future__ import annotations

import json
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data.features import build_task_arrays
from metatrade.data.splits import SplitConfig
from metatrade.data.synthetic import RegimeParams, generate_bars, synthetic_instrument
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.backtest import target_to_action
from metatrade.evaluation.baselines import CLASSICAL, fit_classical
from metatrade.evaluation.protocol import MetaTestProtocol, ProtocolConfig, Start, module_params
from metatrade.exact.windows import latest_windows
from metatrade.market.config import TradingEnvConfig, episode_bounds
from metatrade.market.env import TradingEnv
from metatrade.meta.config import AdaptationConfig

REGIMES = {
    TaskId("Syn000_p030", "5"): RegimeParams(0.3, 1e-3),
    TaskId("Syn001_m030", "5"): RegimeParams(-0.3, 1e-3),
}
LABELS = ["AR(1)", "momentum", "reversal", "time-of-day", "classical-selected"]


@pytest.fixture(scope="module")
def arrays():
    return [
        build_task_arrays(
            t,
            generate_bars(p, 3000, i),
            splits=SplitConfig(),
            instrument=synthetic_instrument(t.instrument),
        )
        for i, (t, p) in enumerate(REGIMES.items())
    ]


def _policy(arrays, observation: str = "full"):
    extra = 4 if observation == "full" else 1
    obs = gym.spaces.Box(-np.inf, np.inf, (4 * arrays[0].num_features + extra,))
    return make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)), obs, gym.spaces.Discrete(5), seed=1
    )


def _config(**kw) -> ProtocolConfig:
    base = dict(
        adaptation_steps=(0, 1),
        adaptation_episodes=2,
        test_episodes=4,
        episode_length=32,
        test_episode_length=48,
        env=TradingEnvConfig(lookback=4),
        oracle=REGIMES,
        bootstrap_samples=200,
        classical=CLASSICAL,
    )
    return ProtocolConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def result(arrays):
    torch.set_num_threads(1)
    pol = _policy(arrays)
    return MetaTestProtocol(_config()).run({"MAML": Start(pol, module_params(pol))}, arrays)


def test_classical_rows_beside_maml_with_oracle_fractions(result) -> None:
    rows = [(r.method, r.k) for r in result.rows]
    assert rows == [("MAML", 0), ("MAML", 1)] + [(m, None) for m in LABELS] + [
        ("buy-and-hold", None),
        ("flat", None),
    ]
    oracle = result.oracle_returns.mean(axis=1).mean()
    for lab in LABELS:
        r = result.row(lab)
        assert r.oracle_fraction.estimate == pytest.approx(result.returns[lab].mean() / oracle)
        assert r.backtest_return == pytest.approx(result.backtests[lab].mean())
    # On AR(1) regimes the plug-in is the oracle's rule: it earns what the oracle earns.
    assert result.row("AR(1)").oracle_fraction.estimate > 0.9
    assert result.row("classical-selected").backtest_oracle_fraction > 0.9


def test_fitted_on_the_rows_the_sampled_starts_adapt_on(result, arrays) -> None:
    cfg = TradingEnvConfig(lookback=4, split="train", episode_length=32)
    for i, a in enumerate(arrays):
        first, _, stop = episode_bounds(a, cfg)
        fit = result.classical["classical-selected"][i]
        assert fit.rows == (first, stop)
        again = fit_classical(CLASSICAL, a, (first, stop), env=TradingEnvConfig(lookback=4))
        assert again["classical-selected"].params == fit.params


def test_rows_trade_the_same_windows_as_maml(result, arrays) -> None:
    """Each classical test-window return is the scalar ledger's on the protocol's windows."""
    assert result.windows.shape == result.returns["MAML@k1"].shape
    cfg = TradingEnvConfig(lookback=4, split="test", episode_length=48)
    for lab in ("classical-selected", "momentum"):
        for i, a in enumerate(arrays):
            pos = result.classical[lab][i].positions(a)
            for j in (0, 3):
                env = TradingEnv(a, cfg)
                env.reset(options={"start": int(result.windows[i, j])})
                done = False
                while not done:
                    act = target_to_action(pos[env.bar], np.int8(env.engine.position))
                    _, _, term, trunc, _ = env.step(int(act))
                    done = term or trunc
                ret = env.liquidate() / cfg.initial_capital - 1
                assert result.returns[lab][i, j] == pytest.approx(ret, abs=1e-12)


def test_headline_difference_in_table_and_json(result, tmp_path) -> None:
    head = result.headline()
    assert list(head) == ["MAML@k1 - classical-selected"]
    assert head["MAML@k1 - classical-selected"] == result.difference(
        "MAML@k1", "classical-selected"
    )
    text = result.format_table()
    assert "paired MAML@k1 - classical-selected" in text and "time-of-day" in text
    result.save(tmp_path)
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(doc["paired_differences"]) == {"MAML@k1 - classical-selected"}
    fits = doc["classical_fits"]["Syn000_p030:5"]
    assert fits["classical-selected"]["params"]["rule"] in ("ar", "momentum")
    assert len(doc["test_windows"]) == 2


def test_exact_estimator_fits_on_its_latest_windows(arrays) -> None:
    pol = _policy(arrays, "position")
    env = TradingEnvConfig(lookback=4, observation="position")
    cfg = _config(
        env=env, adaptation=AdaptationConfig(estimator="exact"), classical=("ar",), oracle=None
    )
    res = MetaTestProtocol(cfg).run({"MAML": Start(pol, module_params(pol))}, arrays)
    train = env.with_overrides(split="train", episode_length=32)
    starts = latest_windows(arrays, num_windows=2, config=train).start.numpy()
    for i, fit in enumerate(res.classical["AR(1)"]):
        assert fit.rows == (starts[i, 0], starts[i, 1] + 33)
    assert "paired" not in res.format_table()  # no classical-selected row, no headline
    with pytest.raises(ValueError, match="classical"):
        replace(cfg, classical=("arima",))
