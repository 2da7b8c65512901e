"""The synthetic regime family (``metatrade.data.regimes``): deterministic per seed, read back
through the DataLoader, each kind's oracle earning what theory says, the config validated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from metatrade.data import DataLoader
from metatrade.data.regime_config import RegimesConfig
from metatrade.data.regimes import (
    TaskRule,
    draw_rules,
    generate_task,
    kind_counts,
    load_task_rules,
    write_regime_tasks,
)
from metatrade.data.synthetic import load_synthetic_params

SIGMA = 1e-3


def _bars(rule: TaskRule, n: int) -> tuple[pd.DataFrame, TaskRule, np.ndarray, np.ndarray]:
    bars, rule = generate_task(rule, n)
    o, c = bars["open"].to_numpy(), bars["close"].to_numpy()
    ts = bars.index.as_unit("ns").asi8
    e = rule.expected_next(open_=o, close=c, timestamps=ts)
    earned = np.zeros(n)
    earned[:-1] = np.sign(e[:-1]) * np.log(c[1:] / o[1:])  # the next bar's body
    return bars, rule, e, earned


RULES = {
    "ar": TaskRule("ar", SIGMA, {"phi": -0.3, "lags": 1}, seed=1),
    "ar3": TaskRule("ar", SIGMA, {"phi": 0.45, "lags": 3}, seed=2),
    "seasonal": TaskRule("seasonal", SIGMA, {"drift": [0.2, -0.1, 0.3]}, seed=3),
    "vol_ar": TaskRule(
        "vol_ar",
        SIGMA,
        {"phi_low": 0.3, "phi_high": -0.3, "persistence": 0.98, "vol_of_vol": 0.5, "window": 24},
        seed=4,
    ),
    "markov": TaskRule(
        "markov", SIGMA, {"phi": [0.35, -0.35], "switch_prob": 0.01}, seed=5, switches=((0, 0),)
    ),
    "gap": TaskRule("gap", SIGMA, {"gap": 8.0, "follow": -0.6, "bars": 6}, seed=6),
}


@pytest.mark.parametrize("name", list(RULES))
def test_oracle_is_the_conditional_expectation(name: str) -> None:
    """Regressing the realised next body on the oracle's expectation gives slope 1 and the
    oracle earns E|E[b_{t+1} | t]| per bar: the simulator and the oracle agree."""
    _, _, e, earned = _bars(RULES[name], 60_000)
    body_next = earned / np.where(e == 0, 1, np.sign(e))
    active = e[:-1] != 0
    slope = np.polyfit(e[:-1][active], body_next[:-1][active], 1)[0]
    assert slope == pytest.approx(1.0, abs=0.12)
    se = earned.std() / np.sqrt(len(earned))
    assert earned.mean() == pytest.approx(np.abs(e).mean(), abs=4 * se)
    assert earned.mean() > 5 * se


def test_ar1_oracle_earns_the_closed_form() -> None:
    """AR(1): E|phi r_t| = |phi| sigma / sqrt(1 - phi^2) sqrt(2 / pi) per bar."""
    _, _, _, earned = _bars(RULES["ar"], 60_000)
    theory = 0.3 * SIGMA / np.sqrt(1 - 0.09) * np.sqrt(2 / np.pi)
    assert earned.mean() == pytest.approx(theory, rel=0.06)


def test_seasonal_and_gap_closed_forms() -> None:
    """Seasonal: the time-weighted mean |drift| sigma (buckets of 25 bars each, 75 a
    session); gap: |follow| E|G| per session (E|G| = gap sigma sqrt(2/pi)), none overnight."""
    _, _, _, earned = _bars(RULES["seasonal"], 60_000)
    assert earned.mean() == pytest.approx(SIGMA * (0.2 + 0.1 + 0.3) / 3, rel=0.06)
    bars, _, _, earned = _bars(RULES["gap"], 75 * 1200)
    per_session = earned.sum() / 1199  # the first session has no gap
    assert per_session == pytest.approx(0.6 * 8.0 * SIGMA * np.sqrt(2 / np.pi), rel=0.1)


def test_noise_oracle_is_flat_and_markov_filter_is_weaker() -> None:
    bars, rule = generate_task(TaskRule("noise", SIGMA, {}, seed=9), 2000)
    assert not rule.positions(_arrays(bars)).any()
    bars, rule = generate_task(RULES["markov"], 40_000)
    arrays = _arrays(bars)
    body = np.log(arrays.close[1:] / arrays.open[1:])
    state = (rule.positions(arrays)[:-1] * body).mean()
    filtered = (rule.positions(arrays, oracle="filter")[:-1] * body).mean()
    assert 0 < filtered < state
    assert len(rule.switches) > 100  # ~400 switches at 1% a bar


class _Arrays:
    def __init__(self, bars: pd.DataFrame) -> None:
        self.open, self.close = bars["open"].to_numpy(), bars["close"].to_numpy()
        self.timestamps = bars.index.as_unit("ns").asi8


def _arrays(bars: pd.DataFrame) -> _Arrays:
    return _Arrays(bars)


def test_deterministic_per_seed(tmp_path: Path) -> None:
    cfg = RegimesConfig()
    a = write_regime_tasks(tmp_path / "a", 6, seed=3, config=cfg, n_bars=400)
    b = write_regime_tasks(tmp_path / "b", 6, seed=3, config=cfg, n_bars=400)
    assert a == b
    for f in (tmp_path / "a").glob("*.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(f), pd.read_parquet(tmp_path / "b" / f.name))
    c = write_regime_tasks(tmp_path / "c", 6, seed=4, config=cfg, n_bars=400)
    assert [r.params for r in c.values()] != [r.params for r in a.values()]
    assert {r.kind for r in a.values()} == {"ar", "seasonal", "vol_ar", "markov", "gap", "noise"}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_files_load_through_the_loader(tmp_path: Path, fmt: str) -> None:
    tasks = write_regime_tasks(tmp_path, 6, seed=1, n_bars=900, fmt=fmt)
    loader = DataLoader(tmp_path, cache_dir=False)
    assert sorted(loader.get_available_tasks()) == sorted(tasks)
    assert load_task_rules(tmp_path) == tasks
    assert load_synthetic_params(tmp_path) == tasks  # the product's entry point reads both
    for task, rule in tasks.items():
        assert task.instrument.endswith(rule.kind)
        arrays = loader.get_task_arrays(*task)
        bars = loader.get_task_data(*task)
        # the oracle of the loader's arrays equals the oracle of the raw bars, row for row,
        # once the longest history any kind reads (vol window 48 bars) is inside the arrays
        full = rule.positions(_arrays(bars))
        rows = np.searchsorted(bars.index.as_unit("ns").asi8, arrays.timestamps)
        assert np.array_equal(rule.positions(arrays)[48:], full[rows][48:])


def test_kind_counts_follow_the_weights() -> None:
    assert kind_counts({"ar": 2.0, "noise": 1.0}, 7) == {"ar": 5, "noise": 2}
    assert sum(kind_counts(RegimesConfig().weights, 13).values()) == 13
    rules = draw_rules(RegimesConfig(weights={"gap": 1.0}), 4, seed=0)
    assert [r.kind for r in rules] == ["gap"] * 4
    assert len({r.seed for r in rules}) == 4  # one bar seed per task


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": {"trend": 1.0}}, "unknown kind"),
        ({"weights": {"ar": 0.0}}, "positive sum"),
        ({"ar": {"phi": (0.5, 0.2)}}, r"ar\.phi"),
        ({"markov": {"phi": (-1.2, 0.4)}}, r"markov\.phi"),
        ({"gap": {"bars": (0, 4)}}, r"gap\.bars"),
        ({"sigma": (0.0, 1e-3)}, "sigma"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        RegimesConfig(**kwargs)


def test_bad_rule_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        TaskRule("trend", SIGMA, {})
    with pytest.raises(ValueError, match="lags"):
        TaskRule("ar", SIGMA, {"phi": 0.1})


def test_run_config_writes_the_regime_family_and_its_oracle(tmp_path: Path) -> None:
    """data.regimes in a run config: the loader's folder holds regime tasks (named after the
    family's settings, so a changed config never reuses a stale folder) and the protocol's
    oracle is each task's TaskRule."""
    from metatrade.training.build import make_protocol_config
    from metatrade.training.config import load_config
    from metatrade.training.task_sets import make_loader, synthetic_dir

    overrides = {
        "data.regimes": {"weights": {"seasonal": 1, "gap": 1}},
        "data.num_synthetic_tasks": 4,
        "data.synthetic_bars": 600,
        "data.synthetic_heldout": 2,
        "run.out_dir": str(tmp_path),
    }
    cfg = load_config("synthetic", overrides=overrides)
    loader = make_loader(cfg)
    held = loader.tasks("test")
    assert len(held) == 2 and {t.instrument.split("_", 1)[1] for t in held} <= {"seasonal", "gap"}
    oracle = make_protocol_config(cfg, held).oracle
    assert all(isinstance(oracle[t], TaskRule) for t in held)
    other = load_config("synthetic", overrides={**overrides, "data.regimes": {}})
    assert synthetic_dir(other) != synthetic_dir(cfg)


def test_an_interrupted_generation_leaves_nothing_a_later_run_refuses(
    tmp_path: Path, monkeypatch
) -> None:
    """Reproduction: Ctrl-C while a run wrote its regime tasks left a folder of some bar
    files and no market description; every later run of that config then stopped on
    'no market description'. Now the tasks are written to a temporary folder and renamed
    into place, and an older version's partial folder is written again."""
    from metatrade.data import regimes
    from metatrade.data.synthetic import PARAMS_FILE
    from metatrade.training.config import load_config
    from metatrade.training.task_sets import make_loader, synthetic_dir

    overrides = {
        "data.regimes": {"weights": {"ar": 1}},
        "data.num_synthetic_tasks": 4,
        "data.synthetic_bars": 600,
        "data.synthetic_heldout": 1,
        "run.out_dir": str(tmp_path),
    }
    cfg = load_config("synthetic", overrides=overrides)
    real = regimes.write_bar_file
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(regimes, "write_bar_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_loader(cfg)
    folder = synthetic_dir(cfg)
    assert not folder.exists() and list(folder.parent.iterdir()) == []  # no trace left
    monkeypatch.setattr(regimes, "write_bar_file", real)
    assert len(make_loader(cfg).tasks("all")) == 4
    (folder / PARAMS_FILE).unlink()  # what an older version's interrupted write looked like
    assert len(make_loader(cfg).tasks("all")) == 4 and (folder / PARAMS_FILE).is_file()
