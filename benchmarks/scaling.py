r"""Seconds per meta-iteration of the backends (batched, local, Ray x1, Ray x2) on the demo's
trading tasks and on 2D navigation, the bytes each iteration sends, and a cost model fitted
to them that predicts a cluster's iteration time (docs/distributed.md, benchmarks/RESULTS.md).

Commands::

    python benchmarks/scaling.py --quick     # 4 tasks a family, 2 timed iterations; < 45 s
    python benchmarks/scaling.py             # the configs' own meta-batches, 5 timed its

What is measured, per family (each backend from the same initial policy and seed):

* ``s_per_it``: median wall time of the timed iterations, after one warm-up iteration
  (Ray's first one starts the actors and loads the data on them);
* ``bytes_sent`` / ``bytes_received`` per iteration (arrays and specs the driver ships);
* ``rounds`` per iteration (driver <-> workers round trips: 2 for Adam, 1 + CG iterations +
  line-search points for TRPO).

Cost model (per family): an iteration on W workers takes
``ceil(T / W) * c_task + R * latency + bytes(T) / bandwidth``, with c_task the per-task
compute (local backend's s/it / T), latency an empty round trip to the actors (measured)
and bytes(T) linear in T; the batched path takes ``T * c_batched``. Predictions for 100 to
1,000 tasks on 1 to 32 nodes assume 16 workers a node and 1.25 GB/s (10 GbE) links. The
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
from functools import partial
from typing import Any

import torch

from metatrade.distributed import attach, make_executor
from metatrade.meta.learner import MetaLearner
from metatrade.runtime import configure_cpu
from metatrade.training.build import make_family, make_meta_config, make_policy_for
from metatrade.training.config import RunConfig, load_config

WORKERS_PER_NODE = 16
BANDWIDTH = 1.25e9  # bytes/s, 10 GbE
TASKS = (100, 300, 1000)
NODES = (1, 2, 4, 8, 16, 32)


def family_config(name: str, quick: bool) -> RunConfig:
    """The demo's trading tasks with the sampled estimator (configs/sampled.yaml) or the
    paper's 2D navigation."""
    overrides: dict[str, Any] = {"meta.seed": 0}
    if quick:
        overrides |= {
            "meta.meta_batch_size": 4,
            "meta.episodes_per_task": 4,
            "meta.num_evaluation_episodes": 4,
        }
    return load_config("sampled" if name == "trading" else "nav2d", overrides=overrides)


def time_backend(
    cfg: RunConfig, family: Any, policy: torch.nn.Module, backend: str, *, workers: int, timed: int
) -> dict[str, float]:
    """Warm-up iteration, then ``timed`` iterations: median s/it, bytes and rounds per it."""
    policy = copy.deepcopy(policy)
    learner = MetaLearner(policy, family, make_meta_config(cfg))
    source = partial(make_family, cfg) if backend == "ray" else family
    executor = make_executor(backend, copy.deepcopy(policy), source, workers=workers)
    attach(learner, executor)
    try:
        t0 = time.perf_counter()
        learner.step()
        first = time.perf_counter() - t0
        rounds0 = getattr(executor, "rounds", 0)
        times, sent, received = [], [], []
        for _ in range(timed):
            stats = learner.step()
            times.append(stats["time/iteration_s"])
            sent.append(stats.get("comm/bytes_sent", 0.0))
            received.append(stats.get("comm/bytes_received", 0.0))
        rounds = (getattr(executor, "rounds", 0) - rounds0) / timed
        latency = round_trip_s(executor) if backend == "ray" else 0.0
    finally:
        if executor is not None:
            executor.close()
    return {
        "s_per_it": statistics.median(times),
        "first_it_s": first,
        "bytes_sent": statistics.mean(sent),
        "bytes_received": statistics.mean(received),
        "rounds": rounds,
        "round_trip_s": latency,
    }


def round_trip_s(executor: Any, repeats: int = 20) -> float:
    """Median time of an empty call to every actor and back: a round's fixed cost."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        executor.pids()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cost_model(rows: dict[str, dict[str, float]], num_tasks: int) -> dict[str, Any]:
    """Per-task compute, per-round latency, bytes per task; predictions and the pay-off."""
    c_task = rows["local"]["s_per_it"] / num_tasks
    c_batched = rows["batched"]["s_per_it"] / num_tasks
    rounds = max(rows["ray x1"]["rounds"], 1.0)
    latency = rows["ray x1"]["round_trip_s"]
    # sent: the spec and each round's argument, once per node (Ray's object store);
    # received: every task's gradient / products / scalars, into the driver
    sent_per_node = rows["ray x1"]["bytes_sent"]
    received_per_task = rows["ray x1"]["bytes_received"] / num_tasks

    def predict(tasks: int, nodes: int, per_node: int = WORKERS_PER_NODE) -> float:
        workers = nodes * per_node
        comm = (nodes * sent_per_node + tasks * received_per_task) / BANDWIDTH
        return math.ceil(tasks / workers) * c_task + rounds * latency + comm

    def pays_off(per_node: int) -> int | None:
        wins = (t for t in range(1, 5001) if predict(t, 1, per_node) < t * c_batched)
        return next(wins, None)

    table = {f"T={t}": {f"N={n}": round(predict(t, n), 3) for n in NODES} for t in TASKS}
    return {
        "c_task_s": c_task,
        "c_batched_s": c_batched,
        "rounds": rounds,
        "latency_s": latency,
        "bytes_sent_per_node": sent_per_node,
        "bytes_received_per_task": received_per_task,
        "predicted_s_per_it": table,
        "batched_s_per_it": {f"T={t}": round(t * c_batched, 3) for t in TASKS},
        "ray_pays_off_from_tasks_on_1_node": pays_off(WORKERS_PER_NODE),
        "ray_pays_off_from_tasks_on_2_workers": pays_off(2),
        "x2_ideal_over_batched_per_task": c_task / 2 / c_batched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 tasks, 2 timed its; < 45 s")
    parser.add_argument("--families", default="trading,nav2d")
    args = parser.parse_args()
    configure_cpu(threads=1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local instance
    import ray

    t_start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    timed = 2 if args.quick else 5
    result: dict[str, Any] = {"quick": args.quick, "cpus": os.cpu_count()}
    for name in args.families.split(","):
        cfg = family_config(name, args.quick)
        family = make_family(cfg)
        policy = make_policy_for(cfg, family)
        rows = {}
        for label, backend, workers in (
            ("batched", "batched", 1),
            ("local", "local", 1),
            ("ray x1", "ray", 1),
            ("ray x2", "ray", 2),
        ):
            rows[label] = time_backend(cfg, family, policy, backend, workers=workers, timed=timed)
            print(name, label, {k: round(v, 4) for k, v in rows[label].items()}, flush=True)
        num = cfg.meta.meta_batch_size
        result[name] = {
            "tasks": num,
            "optimizer": cfg.meta.optimizer,
            "backends": rows,
            "ray_x2_speedup_over_x1": rows["ray x1"]["s_per_it"] / rows["ray x2"]["s_per_it"],
            "model": cost_model(rows, num),
        }
    ray.shutdown()
    result["wall_s"] = time.perf_counter() - t_start
    print(json.dumps(result))


if __name__ == "__main__":
    main()
