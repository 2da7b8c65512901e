"""Seconds per meta-iteration on 2D navigation, for every backend and meta-optimizer, and a
hash of theta after the run: the old-vs-new check of issue 22 (one meta-iteration for every
backend must not be slower, and the same seed must give the same theta).

It times whichever ``metatrade`` is first on ``PYTHONPATH``, so two commits are compared by
alternating it between two source trees in one shell loop (RESULTS.md has the command)::

    python benchmarks/meta_iteration.py --quick     # < 45 s idle: 6 iterations a config
    python benchmarks/meta_iteration.py --iterations 8 --label new

Per (backend, optimizer): 8 tasks x 10 episodes of horizon 100, MLP 64x64, seed 3, one
torch thread; the first iteration is not timed. The last line printed is one JSON object:
``{"batched/adam": [median s, min s, theta hash], ...}``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import time

import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.distributed import attach, make_executor
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.learner import MetaConfig, MetaLearner


def time_config(backend: str, optimizer: str, *, iterations: int) -> list[float | str]:
    """[median s, min s] over iterations 2..N and the first 12 hex digits of theta's sha256."""
    family = Navigation2DFamily(max_episode_steps=100)
    probe = family.make_batch_env(family.sample_tasks(1, task_set="train", rng=0), 1)
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(64, 64)),
        probe.observation_space,
        probe.action_space,
        seed=0,
    )
    cfg = MetaConfig(
        optimizer=optimizer,
        meta_batch_size=8,
        episodes_per_task=10,
        num_evaluation_episodes=10,
        seed=3,
        lr=0.01,
    )
    learner = MetaLearner(policy, family, cfg)
    if backend == "local":
        attach(learner, make_executor("local", copy.deepcopy(policy), family))
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        learner.step()
        times.append(time.perf_counter() - t0)
    theta = b"".join(v.detach().numpy().tobytes() for v in learner.params.values())
    return [statistics.median(times[1:]), min(times[1:]), hashlib.sha256(theta).hexdigest()[:12]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="6 iterations a configuration")
    parser.add_argument("--iterations", type=int, default=8, help="iterations a configuration")
    parser.add_argument("--label", default="", help="a name for this tree in the JSON line")
    parser.add_argument("--backends", nargs="+", default=["batched", "local"])
    parser.add_argument("--optimizers", nargs="+", default=["adam", "trpo"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    iterations = 6 if args.quick else max(2, args.iterations)
    out: dict[str, object] = {"label": args.label, "iterations": iterations}
    for backend in args.backends:
        for optimizer in args.optimizers:
            out[f"{backend}/{optimizer}"] = time_config(backend, optimizer, iterations=iterations)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
