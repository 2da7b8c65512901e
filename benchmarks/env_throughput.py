"""Environment steps per second with random actions on the real 5-minute Nifty bars.

Compares TradingEnv (one env), BatchTradingEnv with 1, 64 and 1024 parallel episodes
(steps = env transitions, i.e. batch steps x episodes) and gym-anytrading's StocksEnv
(window 32) on the same close prices. Observations are produced by every env's step, as a
learner would consume them. Every env runs single-threaded, so rates are measured in
process CPU time (``time.process_time``): on a shared machine, wall time would charge
other jobs' time slices to whichever env happened to be running. Wall-clock rates are
reported too (``*_wall``). Each figure is the best of ``--repeats`` timed runs of
``--seconds`` CPU seconds each. The last line printed is one JSON object.

    python benchmarks/env_throughput.py --quick
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from metatrade.data import DataLoader
from metatrade.market import TradingEnv
from metatrade.market.batch_env import BatchTradingEnv


def timed(run_chunk: Callable[[], int], seconds: float, repeats: int) -> tuple[float, float]:
    """Best (CPU-time, wall-time) steps/s over ``repeats`` runs of ``run_chunk`` (which
    returns the steps it did), each run lasting ``seconds`` of CPU time."""
    run_chunk()  # warm-up
    best_cpu = best_wall = 0.0
    for _ in range(repeats):
        steps, c0, w0 = 0, time.process_time(), time.perf_counter()
        while (cpu := time.process_time() - c0) < seconds:
            steps += run_chunk()
        wall = time.perf_counter() - w0
        best_cpu, best_wall = max(best_cpu, steps / cpu), max(best_wall, steps / wall)
    return best_cpu, best_wall


def single_env_chunk(env: TradingEnv, rng: np.random.Generator) -> Callable[[], int]:
    env.reset(seed=0)  # training episodes of 256 bars, autoreset below
    actions = rng.integers(0, 5, size=200_000).tolist()
    state = {"i": 0}

    def chunk(n: int = 512) -> int:
        i = state["i"]
        for a in actions[i : i + n]:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
        state["i"] = (i + n) % (len(actions) - n)
        return n

    return chunk


def batch_env_chunk(env: BatchTradingEnv, rng: np.random.Generator) -> Callable[[], int]:
    shape = (env.num_tasks, env.episodes_per_task)
    actions = rng.integers(0, 5, size=(64, *shape))
    n_envs = int(np.prod(shape))

    def chunk() -> int:
        for a in actions:
            env.step(a)
        return len(actions) * n_envs

    return chunk


def anytrading_chunk(close: np.ndarray, rng: np.random.Generator) -> Callable[[], int]:
    from gym_anytrading.envs import StocksEnv  # benchmark extra: pip install gym-anytrading

    df = pd.DataFrame({"Close": close})
    env = StocksEnv(df, window_size=32, frame_bound=(32, len(df)))
    env.reset(seed=0)
    actions = rng.integers(0, 2, size=200_000).tolist()
    state = {"i": 0}

    def chunk(n: int = 512) -> int:
        i = state["i"]
        for a in actions[i : i + n]:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
        state["i"] = (i + n) % (len(actions) - n)
        return n

    return chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (< 45 s in all)")
    parser.add_argument("--data-dir", default="/work/shared/data/ohlcv")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per timed run")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per env (best)")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    repeats = args.repeats or (2 if args.quick else 3)

    arrays = DataLoader(args.data_dir).get_task_arrays("Nifty", "5")
    rng = np.random.default_rng(0)
    print(f"Nifty 5-min: {len(arrays)} bars, {arrays.num_features} features, lookback 32")

    chunks = {"single": single_env_chunk(TradingEnv(arrays, split="all"), rng)}
    for n in (1, 64, 1024):
        env = BatchTradingEnv([arrays], n, split="all", episode_length=256, seed=0)
        env.reset(seed=0)
        chunks[f"batch{n}"] = batch_env_chunk(env, rng)
    chunks["anytrading"] = anytrading_chunk(arrays.close, rng)
    results: dict[str, float] = {}
    for name, chunk in chunks.items():
        cpu, wall = timed(chunk, seconds, repeats)
        results[f"{name}_steps_per_s"] = cpu
        results[f"{name}_steps_per_s_wall"] = wall
    base = results["anytrading_steps_per_s"]
    results["batch1024_vs_anytrading"] = results["batch1024_steps_per_s"] / base
    results["single_vs_anytrading"] = results["single_steps_per_s"] / base
    for key, value in results.items():
        print(f"{key:>31}: {value:,.2f}")
    results["seconds_per_run"], results["repeats"] = seconds, repeats
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
