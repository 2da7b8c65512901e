"""TradingTaskFamily over a real DataLoader reading a small synthetic data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metatrade.data.loader import DataLoader
from metatrade.data.synthetic import write_synthetic_tasks
from metatrade.envs.trading import TradingTaskFamily
from metatrade.market import TradingEnvConfig
from metatrade.market.batch_env import BatchTradingEnv
from metatrade.meta.protocols import BatchEnv, TaskFamily


def test_family_samples_tasks_and_builds_period_restricted_envs(tmp_path: Path) -> None:
    write_synthetic_tasks(tmp_path, 3, seed=0, n_bars=1200, timeframes=("5", "15"))
    loader = DataLoader(tmp_path, cache_dir=False)
    cfg = TradingEnvConfig(lookback=8, episode_length=16)
    family = TradingTaskFamily(loader, cfg, period="validation")
    assert isinstance(family, TaskFamily)

    tasks = family.sample_tasks(2, task_set="train", rng=np.random.default_rng(0))
    assert tasks == loader.sample_tasks(2, rng=np.random.default_rng(0), task_set="train")
    env = family.make_batch_env(tasks, episodes_per_task=3)
    assert isinstance(env, BatchTradingEnv) and isinstance(env, BatchEnv)
    obs = env.reset(seed=0)
    assert obs.shape == (2, 3, env.observation_space.shape[0])
    for row, task in enumerate(tasks):
        lo, hi = loader.get_task_arrays(*task).splits["validation"]
        assert ((env.starts[row] >= lo) & (env.starts[row] + 16 <= hi - 1)).all()
    _, reward, *_ = env.step(np.zeros((2, 3), dtype=int))
    assert np.isfinite(reward).all()
