"""Seconds per meta-iteration on the CPU and, where torch sees one, on a CUDA GPU: issue 23's
item 3, as one short prepared script for a machine with a GPU.

Two workloads, each through the ``Trainer`` exactly as ``metatrade meta-train`` runs it with
``run.device`` set (the envs stay numpy on the CPU; the policy, the adaptation, the Fisher
products and the meta-update run on the device):

* ``nav2d_trpo``: ``configs/nav2d.yaml`` with TRPO's Fisher on every episode
  (``meta.cg_subsample: 1.0``, the like-for-like setting of the side-by-side benchmark);
* ``exact``: ``configs/exact.yaml`` (the exact expected-P&L estimator on the embedded index
  bars, Adam).

::

    python benchmarks/device_iteration.py --quick    # < 45 s on the CPU alone
    python benchmarks/device_iteration.py            # more iterations

Without a GPU the JSON line says ``"cuda": "not available"``; nothing depends on one. The
last line printed is one JSON object: ``{"cpu": {workload: median s}, "cuda": ...}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch

from metatrade.runtime import configure_cpu
from metatrade.training import build, task_sets
from metatrade.training.config import RunConfig, apply_overrides, load_config
from metatrade.training.trainer import Trainer

WORKLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "nav2d_trpo": ("configs/nav2d.yaml", {"meta.cg_subsample": 1.0}),
    "exact": ("configs/exact.yaml", {}),
}


def _trainer(cfg: RunConfig) -> Trainer:
    loader = task_sets.make_loader(cfg) if cfg.data.family != "nav2d" else None
    family = build.make_family(cfg, loader)
    return Trainer(family, None, config=cfg, run_dir=None, progress=False, tensorboard=False)


def time_workload(name: str, device: str, *, iterations: int, warmup: int) -> float:
    """Median wall seconds of ``iterations`` meta-iterations after ``warmup`` untimed ones."""
    path, overrides = WORKLOADS[name]
    cfg = apply_overrides(load_config(path), {**overrides, "run.device": device})
    trainer = _trainer(cfg)
    trainer.meta_train(warmup)
    times = []
    for i in range(iterations):  # meta_train(n) trains up to iteration n
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.meta_train(warmup + i + 1)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed iterations a workload")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    args = parser.parse_args()
    configure_cpu(threads=args.threads)
    iterations = 3 if args.quick else 10
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result: dict[str, Any] = {"cuda": "not available", "threads": args.threads}
    for device in devices:
        result[device] = {
            name: time_workload(name, device, iterations=iterations, warmup=1) for name in WORKLOADS
        }
        print(f"{device}: {result[device]}", flush=True)
    if "cuda" in devices:
        result["gpu"] = torch.cuda.get_device_name(0)
    result["cpu_name"] = platform.processor() or platform.machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
