"""The meta-test protocol's inputs: ``Start`` (a starting point for adaptation) and
``ProtocolConfig`` (see ``metatrade.evaluation.protocol`` for the protocol itself)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metatrade.data.synthetic import OracleRule
from metatrade.data.task_arrays import TaskId
from metatrade.evaluation.backtest import buy_and_hold, flat
from metatrade.evaluation.baselines import ClassicalConfig, check_names
from metatrade.market.config import TradingEnvConfig
from metatrade.market.family import ObjectiveSettings
from metatrade.meta.config import AdaptationConfig

Params = dict[str, Tensor]


@dataclass(frozen=True)
class Start:
    """A starting point for adaptation: a policy module and its parameters (no task axis);
    ``inner_lrs`` are Meta-SGD per-parameter step sizes when the start learned them."""

    policy: nn.Module
    params: Params
    inner_lrs: Params | None = None


def module_params(policy: nn.Module) -> Params:
    """A module's parameters as a detached dict (the start of a trained network)."""
    return {k: v.detach().clone() for k, v in policy.named_parameters()}


def random_start(policy: nn.Module, seed: int) -> Start:
    """A freshly initialised network of the same architecture as ``policy``, seeded."""
    from metatrade.agents.policies import policy_from_spec

    dtype = next(policy.parameters()).dtype
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = policy_from_spec(policy.spec, dtype=dtype)
    return Start(fresh, module_params(fresh))


@dataclass
class ProtocolConfig:
    """Knobs of the meta-test protocol (names match the run config's ``evaluation`` and
    ``meta`` sections)."""

    adaptation_steps: tuple[int, ...] = (0, 1, 2, 3)
    """k values reported; adaptation runs to max(k), evaluating after each listed k"""
    adaptation_episodes: int = 10
    """episodes per task per inner step, from the adaptation window (train split)"""
    test_episodes: int = 10
    """random test windows per task (the same for every start and k)"""
    episode_length: int = 256
    """bars per adaptation episode (shortened to fit the shortest train split)"""
    test_episode_length: int = 256
    """bars per test window (shortened to fit half the shortest test split)"""
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    """the inner loop every start is adapted with (the run's ``meta`` settings, its estimator
    included); its batch size is ``adaptation_episodes``"""
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    """the exact objective's settings (with ``adaptation.estimator: exact``)"""
    deterministic_test: bool = False
    """test windows and backtests with the policy's mode instead of sampled actions (the run
    config's ``evaluation.actions: mode``)"""
    backtest: bool = True
    """also run a whole-split backtest per task, start and k"""
    references: tuple[str, ...] = ("buy_and_hold", "flat")
    classical: tuple[str, ...] = ()
    """classical adaptive rows (``baselines.CLASSICAL``: ar, momentum, reversal, time_of_day,
    classical_selected), fitted on the rows the starts adapt on"""
    classical_settings: ClassicalConfig = field(default_factory=ClassicalConfig)
    """their settings (AR order, momentum horizons, time-of-day buckets)"""
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    adaptation_split: str = "train"
    test_split: str = "test"
    env: TradingEnvConfig = field(default_factory=TradingEnvConfig)
    oracle: Mapping[TaskId, OracleRule] | None = None
    """synthetic tasks' true rules (AR(1) ``RegimeParams`` or regime ``TaskRule``): report
    returns as a fraction of the oracle's"""
    oracle_threshold: float = 0.0
    """oracle trades only when |expected next return| exceeds this (fraction of price)"""

    def __post_init__(self) -> None:
        ks = sorted({int(k) for k in self.adaptation_steps})
        if not ks or ks[0] < 0:
            raise ValueError(
                f"ProtocolConfig.adaptation_steps={self.adaptation_steps}: use k >= 0, e.g. (0, 1, 2, 3)"
            )
        self.adaptation_steps = tuple(ks)
        unknown = set(self.references) - set(REFERENCES)
        if unknown:
            raise ValueError(
                f"ProtocolConfig.references: unknown {sorted(unknown)}; use {sorted(REFERENCES)}"
            )
        self.classical = check_names(self.classical, "ProtocolConfig.classical")


REFERENCES = {"buy_and_hold": buy_and_hold, "flat": flat}
REF_LABEL = {"buy_and_hold": "buy-and-hold", "flat": "flat"}
