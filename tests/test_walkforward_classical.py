"""Classical rows in the walk-forward: re-fitted before every fold on the rows the starts
adapt on, traded in the ledger like any target row, in every table and paired with MAML."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from metatrade.evaluation.baselines import CLASSICAL, ClassicalConfig, fit_classical
from metatrade.evaluation.protocol import Start, module_params
from metatrade.evaluation.walkforward import (
    FoldSpec,
    InnerLoopAdapter,
    WalkForwardConfig,
    fold_arrays,
    run_walkforward,
)
from metatrade.evaluation.walkforward.classical import adapter_rows
from metatrade.evaluation.walkforward.ledger import Row, trade_task
from metatrade.evaluation.walkforward.report import difference_lines, save_report, text_table
from metatrade.exact.windows import latest_windows
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.config import AdaptationConfig
from walkforward_helpers import ar_task, tiny_policy

ENV = TradingEnvConfig(lookback=4, episode_length=16)
SPEC = FoldSpec(fold_bars=90, adapt_bars=120, embargo=3)
SETTINGS = ClassicalConfig(horizons=(1, 3, 6), buckets=3)


@pytest.fixture(scope="module")
def run():
    _, task = ar_task(0.4, n_bars=1200)
    policy = tiny_policy(4)
    adapter = InnerLoopAdapter(ENV, AdaptationConfig(episodes_per_task=4, inner_lr=1.0), steps=1)
    cfg = WalkForwardConfig(
        folds=SPEC,
        env=ENV,
        start=700,
        bootstrap_samples=50,
        classical=CLASSICAL,
        classical_settings=SETTINGS,
    )
    res = run_walkforward({"MAML": Start(policy, module_params(policy))}, [task], adapter, cfg)
    return task, adapter, res


def test_refitted_before_every_fold_on_the_adapters_rows(run) -> None:
    task, adapter, res = run
    rec = res.tasks[0]
    assert len(rec.classical_fits) == len(rec.folds) > 1
    manual = np.zeros(len(task), dtype=np.int8)
    for fold, fits in zip(rec.folds, rec.classical_fits, strict=True):
        lo, hi = fold.adapt  # sampled episodes trade every row of the window
        assert fits["classical-selected"]["rows"] == [lo, hi] and hi <= fold.trade[0] - 3
        again = fit_classical(CLASSICAL, task.arrays, (lo, hi), env=ENV, config=SETTINGS)
        for label, rule in again.items():
            assert fits[label]["params"] == rule.params
        a, b = fold.trade
        manual[a:b] = again["classical-selected"].positions(task.arrays)[a:b]
    # The row trades exactly those per-fold targets in the ledger.
    alone = trade_task(
        lambda f: fold_arrays(task, rec.folds[f], SPEC),
        rec.folds,
        [Row("x", "x", None, targets=manual)],
        lambda f, r: {},
        ENV,
        carry=True,
    )[0]
    np.testing.assert_array_equal(alone.equity, rec.records["classical-selected"].equity)


def test_exact_adapter_rows_are_its_latest_windows(run) -> None:
    task, _, res = run
    fold = res.tasks[0].folds[1]
    exact = AdaptationConfig(estimator="exact", episodes_per_task=3)
    adapter = InnerLoopAdapter(env=ENV, adaptation=exact)
    lo, hi = adapter_rows(adapter, task, fold.adapt)
    arrays = fold_arrays(task, fold, SPEC)
    cfg = ENV.with_overrides(split="adapt")
    starts = latest_windows([arrays], num_windows=3, config=cfg).start.numpy()[0]
    assert (lo, hi) == (starts[0], starts[-1] + 17) and hi == fold.adapt[1]


def test_rows_in_every_output_with_the_paired_difference(run, tmp_path) -> None:
    _, _, res = run
    labels = ["AR(1)", "momentum", "reversal", "time-of-day", "classical-selected"]
    assert res.labels == ["MAML@k0", "MAML@k1", *labels, "buy-and-hold", "flat"]
    diff = res.pooled.differences["MAML@k1 - classical-selected"]["sharpe"]
    assert diff.low <= diff.estimate <= diff.high
    table = text_table(res)
    (line,) = difference_lines(res)
    assert line.startswith("paired (pooled) MAML@k1 - classical-selected: Sharpe")
    assert all(lab in table for lab in labels)
    files = save_report(res, tmp_path)
    with open(files["csv"]) as fh:
        rows = {r["row"] for r in csv.DictReader(fh)}
    assert set(labels) <= rows
    page = files["html"].read_text()
    assert "MAML@k1 - classical-selected" in page and "re-fitted before every fold" in page
    doc = json.loads(files["json"].read_text())
    fits = doc["tasks"][res.tasks[0].task]["classical_fits"]
    assert len(fits) == len(res.tasks[0].folds)
    assert fits[0]["classical-selected"]["params"]["rule"] in (
        "ar",
        "momentum",
        "reversal",
        "time_of_day",
    )
