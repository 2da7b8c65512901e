"""The issue-19 recipe through the product's own pieces (files -> DataLoader -> the exact
objective -> ``MetaLearner`` -> ``MetaTestProtocol`` ledger), before target actions and
``env.features`` land: the extra features are swapped into the loader's ``TaskArrays`` by
``ExtraFeatureLoader`` (what ``env.features`` will do), and the action space is today's five
orders (a reversal takes two bars). Reports MAML k = 1 oracle fractions by kind.

    python -m experiments.regimes.product_path --iterations 300 --train-tasks 120
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.data import DataLoader, HeldOut, SplitConfig
from metatrade.data.extra_features import BarView, extra_features
from metatrade.data.features import CLIP
from metatrade.data.regimes import write_regime_tasks
from metatrade.envs.trading import TradingTaskFamily
from metatrade.evaluation.kinds import kind_summary, task_kinds
from metatrade.evaluation.protocol import MetaTestProtocol, ProtocolConfig, Start
from metatrade.market.config import TradingEnvConfig
from metatrade.market.costs import CostModel
from metatrade.meta.learner import MetaConfig, MetaLearner

FEATURES = (
    "next_sixth",
    "open_gap_decay_3",
    "open_gap_decay_12",
    "ret_x_volratio",
    "ret_x_autocorr_32",
)


class ExtraFeatureLoader:
    """A DataLoader whose tasks' features are ``logret_1`` plus the named extra features,
    z-scored with each task's train split and clipped, like the product's pipeline."""

    def __init__(self, loader: DataLoader, names: tuple[str, ...]) -> None:
        self.loader, self.names = loader, names
        self.get_task_arrays = lru_cache(maxsize=None)(self._arrays)

    def _arrays(self, instrument: str, timeframe: str) -> Any:
        arrays = self.loader.get_task_arrays(instrument, timeframe)
        bars = self.loader.get_task_data(instrument, timeframe)
        view = BarView(
            open=bars["open"].to_numpy(),
            close=bars["close"].to_numpy(),
            timestamps=bars.index.as_unit("ns").asi8,
            bar_minutes=int(timeframe),
        )
        extra, cols = extra_features(self.names, view)
        rows = np.searchsorted(view.timestamps, arrays.timestamps)
        logret = np.zeros(len(view.close))
        logret[1:] = np.diff(np.log(view.close))
        raw = np.concatenate([logret[:, None], extra], axis=1)[rows]
        a, b = arrays.splits["train"]
        mean, std = raw[a:b].mean(0), raw[a:b].std(0)
        z = np.clip((raw - mean) / np.where(std > 0, std, 1.0), -CLIP, CLIP)
        return dataclasses.replace(
            arrays, features=z.astype(np.float32), feature_names=("logret_1", *cols)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-tasks", type=int, default=480)
    ap.add_argument("--eval-tasks", type=int, default=120)
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--lookback", type=int, default=4)
    ap.add_argument("--inner-lr", type=float, default=30.0)
    ap.add_argument("--meta-sgd-lr", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--policy", default="linear")
    ap.add_argument("--tasks", choices=("validation", "test"), default="validation")
    return ap.parse_args()


TEST_BARS = 2048


def write_tasks(tmp: str, args: argparse.Namespace) -> tuple[Any, Any, dict]:
    """(training loader, held-out loader, held-out rules): the held-out tasks' last 2,048
    bars are their test period, everything before is "train" (the latest 512 bars of it are
    what every start adapts on)."""
    write_regime_tasks(Path(tmp, "train"), args.train_tasks, 1000 + args.seed, n_bars=3000)
    held_seed = (5000 if args.tasks == "validation" else 2000) + args.seed
    n_held = 1024 + TEST_BARS
    rules = write_regime_tasks(Path(tmp, "held"), args.eval_tasks, held_seed, n_bars=n_held)
    train = ExtraFeatureLoader(DataLoader(Path(tmp, "train"), cache_dir=False), FEATURES)
    frac = TEST_BARS / (n_held - 49)  # 49 warm-up rows
    splits = SplitConfig(train=1 - frac, validation=0.0, test=frac)
    held = ExtraFeatureLoader(
        DataLoader(Path(tmp, "held"), splits=splits, heldout=HeldOut(), cache_dir=False),
        FEATURES,
    )
    return train, held, rules


def meta_train(
    train: Any, env: TradingEnvConfig, args: argparse.Namespace
) -> tuple[Start, Any, int]:
    """MAML-exact with the recipe's settings: (the start, its MetaConfig, iterations run)."""
    family = TradingTaskFamily(train, env, period="train", seed=args.seed)
    probe = family.make_batch_env(train.get_available_tasks()[:1], 1)
    n_feat = probe.observation_space.shape[0] - 1
    policy = make_policy(
        NetworkConfig(kind=args.policy, hidden_sizes=(8,)),
        probe.observation_space,
        probe.action_space,
        window_shape=(args.lookback, n_feat // args.lookback),
        account_dim=1,
        seed=args.seed,
    )
    cfg = MetaConfig(
        estimator="exact",
        optimizer="adam",
        lr=args.lr,
        inner_lr=args.inner_lr,
        learn_inner_lr=True,
        meta_sgd_lr=args.meta_sgd_lr,
        meta_batch_size=16,
        episodes_per_task=8,
        num_evaluation_episodes=8,
        seed=args.seed,
    )
    learner = MetaLearner(policy, family, cfg)
    t1, it = time.perf_counter(), 0
    while it < args.iterations and time.perf_counter() - t1 < args.time_limit:
        stats = learner.step()
        it += 1
        if it % 100 == 0:
            print(f"it {it} {stats.get('meta/loss', float('nan')):+.4f}", flush=True)
    params = {k: v.detach().clone() for k, v in learner.params.items()}
    return Start(policy, params, learner.inner_lrs), cfg, it


def evaluate_start(start: Start, cfg: Any, env, held, rules, seed: int) -> dict[str, Any]:
    """MAML k = 0 and 1 oracle fractions by kind, trading the mode and sampling."""
    out: dict[str, Any] = {}
    for mode in (True, False):
        pcfg = ProtocolConfig(
            adaptation_steps=(0, 1),
            adaptation_episodes=8,
            test_episodes=32,
            episode_length=64,
            test_episode_length=64,
            adaptation=cfg,
            env=env,
            oracle=rules,
            backtest=False,
            seed=seed,
            deterministic_test=mode,
        )
        res = MetaTestProtocol(pcfg).run({"MAML": start}, held.get_available_tasks(), held)
        kinds = task_kinds(res.tasks, rules)
        for k in (0, 1):
            s = kind_summary(res.returns[f"MAML@k{k}"], res.oracle_returns, kinds, seed=0)
            key = f"maml_k{k}_{'mode' if mode else 'sampled'}"
            out[key] = {kk: round(v.estimate, 3) for kk, v in s.fractions.items()}
            out[key]["mean"] = round(s.mean_fraction, 3)
            print(key, out[key], flush=True)
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    env = TradingEnvConfig(
        lookback=args.lookback,
        episode_length=64,
        observation="position",
        square_off=True,
        costs=CostModel(entry_fee=0.0, exit_fee=0.0),
    )
    with tempfile.TemporaryDirectory() as tmp:
        train, held, rules = write_tasks(tmp, args)
        t1 = time.perf_counter()
        start, cfg, iterations = meta_train(train, env, args)
        t2 = time.perf_counter()
        out = {"args": vars(args), "iterations": iterations, "sec_train": round(t2 - t1, 1)}
        out |= evaluate_start(start, cfg, env, held, rules, args.seed)
        out["sec_data"] = round(t1 - t0, 1)
        out["sec_total"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    with open(Path(__file__).parent / "product_path.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
