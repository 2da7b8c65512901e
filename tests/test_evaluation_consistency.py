"""Issue #11 item 8: what the evaluation reports is consistent.

- every start draws from its own seeded stream, so the random row does not change with
  whether the PPO row ran;
- the test-window returns and the whole-split backtest treat an open position at the end the
  same way as the backtest report (both liquidate with the exit cost);
- learned Meta-SGD step sizes are used by evaluate / adapt / backtest (not the scalar inner_lr).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data.features import build_task_arrays
from metatrade.data.splits import SplitConfig
from metatrade.data.synthetic import RegimeParams, generate_bars, synthetic_instrument
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.backtest import buy_and_hold, run_backtest
from metatrade.evaluation.protocol import (
    MetaTestProtocol,
    ProtocolConfig,
    Start,
    module_params,
    random_start,
)
from metatrade.market.config import TradingEnvConfig
from metatrade.market.costs import CostModel

REGIMES = {
    TaskId("Syn000_p040", "5"): RegimeParams(0.4, 1e-3),
    TaskId("Syn001_m040", "5"): RegimeParams(-0.4, 1e-3),
}
# Real costs (entry 25 / exit 35 INR + 3 bps), so liquidating or not changes the numbers.
ENV = TradingEnvConfig(lookback=4, costs=CostModel(proportional_bps=3.0))


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    arrays = [
        build_task_arrays(
            t,
            generate_bars(p, 700, i),
            splits=SplitConfig(),
            instrument=synthetic_instrument(t.instrument),
        )
        for i, (t, p) in enumerate(REGIMES.items())
    ]
    obs = gym.spaces.Box(-np.inf, np.inf, (4 * arrays[0].num_features + 4,))
    pol = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)), obs, gym.spaces.Discrete(5), seed=1
    )
    other = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)), obs, gym.spaces.Discrete(5), seed=2
    )
    cfg = ProtocolConfig(
        adaptation_steps=(0, 1),
        adaptation_episodes=2,
        test_episodes=3,
        episode_length=24,
        test_episode_length=24,
        env=ENV,
        bootstrap_samples=50,
    )
    return arrays, pol, other, cfg


def test_random_row_does_not_change_with_whether_the_ppo_row_ran(setup) -> None:
    """Reproduction: `evaluate` with and without a PPO baseline printed different numbers
    for the random row (one shared generator, and rows sampled as one batch)."""
    arrays, pol, other, cfg = setup
    maml = Start(pol, module_params(pol))
    with_ppo = MetaTestProtocol(cfg).run(
        {"MAML": maml, "PPO": Start(other, module_params(other)), "random": random_start(pol, 3)},
        arrays,
    )
    without = MetaTestProtocol(cfg).run({"MAML": maml, "random": random_start(pol, 3)}, arrays)
    for label in ("random@k0", "random@k1", "MAML@k0", "MAML@k1"):
        np.testing.assert_array_equal(with_ppo.returns[label], without.returns[label], label)
        np.testing.assert_array_equal(with_ppo.backtests[label], without.backtests[label])
    # the sampled test windows are really stochastic (the check above is not vacuous)
    assert not np.array_equal(with_ppo.returns["MAML@k0"], with_ppo.returns["random@k0"])


def test_protocol_backtest_liquidates_like_the_backtest_report(setup) -> None:
    """Reproduction: buy-and-hold's whole-split return in the evaluation table differed from
    the backtest report's Total Return: the table marked the open position at the last
    close, the report closed it paying the exit cost."""
    arrays, pol, _, cfg = setup
    res = MetaTestProtocol(cfg).run({"MAML": Start(pol, module_params(pol))}, arrays)
    report = [
        run_backtest(buy_and_hold(), a, split="test", config=ENV).total_return for a in arrays
    ]
    np.testing.assert_allclose(res.backtests["buy-and-hold"], report, rtol=0, atol=1e-12)


def test_learned_meta_sgd_step_sizes_are_used_by_adapt_and_evaluate(tmp_path) -> None:
    """Reproduction: a Meta-SGD run (meta.learn_inner_lr) evaluated with `adapt` / `evaluate`
    / `backtest` adapted with the scalar inner_lr; its learned step sizes were dropped. With
    the learned step sizes all zero, one adaptation step must leave the policy unchanged."""
    from metatrade.agents.checkpoint import load_checkpoint
    from metatrade.training.build import load_inner_lrs, make_family, make_learner, make_policy_for
    from metatrade.training.checkpoint import RNGStreams
    from metatrade.training.commands import adapt_to_tasks
    from metatrade.training.config import load_config

    cfg = load_config("tiny", out_dir=tmp_path, overrides={"meta.learn_inner_lr": True})
    family = make_family(cfg)
    policy = make_policy_for(cfg, family)
    state = {"learner": make_learner(cfg, family, policy, RNGStreams(0)).state_dict()}
    assert state["learner"]["inner_lrs"] is not None
    state["learner"]["inner_lrs"] = {k: torch.zeros_like(v) for k, v in policy.named_parameters()}
    lrs = load_inner_lrs(state)

    def adapted(run_dir, inner_lrs):
        files = adapt_to_tasks(cfg, policy, run_dir, 1, inner_lrs=inner_lrs)["files"]
        return load_checkpoint(files[0])[1]["params"]

    learned = adapted(tmp_path / "learned", lrs)
    scalar = adapted(tmp_path / "scalar", None)
    start = dict(policy.named_parameters())
    assert all(torch.equal(learned[n], start[n].detach()) for n in start)
    assert not all(torch.equal(scalar[n], start[n].detach()) for n in start)


def test_a_narrow_interval_from_overlapping_windows_is_flagged(setup, tmp_path) -> None:
    """Reproduction: with one held-out task the interval came from heavily overlapping test
    windows of a short split, and nothing said it was too narrow. Now the table (and its
    JSON) carry a warning computed from the number of effectively independent windows."""
    import json

    from metatrade.evaluation.protocol_result import interval_warning

    arrays, pol, _, cfg = setup
    res = MetaTestProtocol(cfg).run({"MAML": Start(pol, module_params(pol))}, arrays[:1])
    table = " ".join(res.format_table().split())
    assert "WARNING: the intervals are likely too narrow: one held-out task" in table
    doc = json.loads(res.to_json(tmp_path / "e.json").read_text())
    assert doc["warnings"] == res.warnings and len(res.warnings) == 1
    # independent windows = sum over tasks of min(windows, split / window length)
    assert "about 8 effectively independent" in interval_warning(
        split_bars=[100, 100], window_bars=25, windows_per_task=16
    )
    assert interval_warning(split_bars=[2000] * 4, window_bars=24, windows_per_task=10) is None
