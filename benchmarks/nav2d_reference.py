r"""pytorch-maml-rl (T. Deleu), the reference MAML-TRPO, timed side by side with metatrade.

``benchmarks/nav2d_maml.py --quick`` calls ``run_reference`` between its own timing rounds
when the reference is installed (``--reference DIR`` or ``$METATRADE_MAML_RL_DIR``; the
Python of its virtual environment from ``--reference-python`` or
``$METATRADE_MAML_RL_PYTHON``, default ``DIR/../venv/bin/python``) and prints the ratio of
the two medians. Both run 2D navigation with the reference's ``configs/maml/2d-navigation.yaml``
(20 tasks x 20 trajectories x 100 steps, one inner step with lr 0.1, TRPO with max KL 0.01,
conjugate gradient 10 iterations, damping 1e-5, line search 15 x 0.8); the reference samples
with 2 worker processes of one torch thread each, its main process keeps torch's default
threads (the machine's cores); metatrade runs with ``--threads``.

The recipe (kept outside the repository: the reference's code is never committed here)::

    # the code: tristandeleu/pytorch-maml-rl at 21d4ba1ccd300a403928e6db553c9529bcc3fbdf
    # (2020-08-31, "Merge pull request #49"), checked out to /work/ref/pytorch-maml-rl
    python3.11 -m venv /work/ref/venv
    /work/ref/venv/bin/pip install torch==2.13.0      # the CPU wheel; no other torch
    /work/ref/venv/bin/pip install gym==0.17.3 numpy==1.26.4 tqdm pyyaml
    #   gym 0.17.3 (its requirements say gym>=0.15; the last with the old vector API it
    #   imports) pulls scipy, pyglet 1.5.0 and cloudpickle 1.6.0; numpy < 2 because the
    #   reference uses ``np.float_`` (removed in numpy 2.0)

and two one-line patches for current torch::

    # maml_rl/baseline.py, LinearFeatureBaseline.fit: torch.lstsq was removed (torch 2.0)
    -                coeffs, _ = torch.lstsq(XT_y, XT_X + reg_coeff * self._eye)
    +                coeffs = torch.linalg.lstsq(XT_X + reg_coeff * self._eye, XT_y).solution
    # maml_rl/samplers/multi_task_sampler.py, SamplerWorker.run: a forked worker that
    # uses the parent's OpenMP pool hangs; one thread each, as the benchmark intends
         def run(self):
    +        torch.set_num_threads(1)
             while True:

Then ``METATRADE_MAML_RL_DIR=/work/ref/pytorch-maml-rl python benchmarks/nav2d_maml.py
--quick --cg-subsample 1.0 --threads 2`` (docs/notes/meta-performance.md has the figures).

This file is also the driver the reference's Python runs (``--driver``): it imports only
the standard library at the top, the reference's code and torch inside ``drive``, and
times ``train.py``'s loop (sample, ``MAMLTRPO.step``, wait) one meta-iteration at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV_DIR = "METATRADE_MAML_RL_DIR"
ENV_PYTHON = "METATRADE_MAML_RL_PYTHON"
CONFIG = "configs/maml/2d-navigation.yaml"
REFERENCE_COMMIT = "21d4ba1ccd300a403928e6db553c9529bcc3fbdf"


@dataclass(frozen=True)
class Reference:
    """Where the reference is installed: its checkout and its virtual environment's Python."""

    directory: Path
    python: Path


def find_reference(directory: str | None, python: str | None) -> Reference | None:
    """The reference named by the options or the environment, or None when none is named.
    A named one that is incomplete is a user error (a one-line message, exit status 2)."""
    directory = directory or os.environ.get(ENV_DIR)
    if not directory:
        return None
    root = Path(directory)
    exe = Path(python or os.environ.get(ENV_PYTHON) or root.parent / "venv" / "bin" / "python")
    if not (root / CONFIG).is_file() or not (root / "maml_rl").is_dir():
        _fail(
            f"--reference {root}: no pytorch-maml-rl checkout there (expected {CONFIG} and "
            "maml_rl/); see benchmarks/nav2d_reference.py for the recipe"
        )
    if not exe.is_file():
        _fail(
            f"reference Python {exe} not found; pass --reference-python or set {ENV_PYTHON} "
            "(the recipe is in benchmarks/nav2d_reference.py)"
        )
    return Reference(root, exe)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_reference(
    ref: Reference, *, warmup: int, timed: int, seed: int, workers: int = 2
) -> list[float]:
    """Seconds of each of ``timed`` meta-iterations of the reference after ``warmup``
    untimed ones, in a fresh process (its sampler workers start with it)."""
    cmd = [
        str(ref.python),
        str(Path(__file__).resolve()),
        "--driver",
        str(ref.directory),
        "--iterations",
        str(warmup + timed),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ref.directory, check=False)
    times = [json.loads(line)["seconds"] for line in proc.stdout.splitlines() if line[:1] == "{"]
    if proc.returncode != 0 or len(times) != warmup + timed:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"the reference failed (exit {proc.returncode}): {' | '.join(tail)}")
    return times[warmup:]


def drive(directory: str, *, iterations: int, seed: int, workers: int) -> None:
    """``train.py``'s loop for ``iterations`` meta-iterations, one JSON line each."""
    sys.path.insert(0, directory)
    import gym  # noqa: PLC0415 - the reference's environment only
    import maml_rl.envs  # noqa: F401, PLC0415 - registers 2DNavigation-v0
    import torch  # noqa: PLC0415
    import yaml  # noqa: PLC0415
    from maml_rl.baseline import LinearFeatureBaseline  # noqa: PLC0415
    from maml_rl.metalearners import MAMLTRPO  # noqa: PLC0415
    from maml_rl.samplers import MultiTaskSampler  # noqa: PLC0415
    from maml_rl.utils.helpers import get_input_size, get_policy_for_env  # noqa: PLC0415

    with open(Path(directory) / CONFIG) as f:
        config = yaml.load(f, Loader=yaml.FullLoader)
    torch.manual_seed(seed)
    env = gym.make(config["env-name"], **config.get("env-kwargs", {}))
    env.close()
    policy = get_policy_for_env(
        env, hidden_sizes=config["hidden-sizes"], nonlinearity=config["nonlinearity"]
    )
    policy.share_memory()
    baseline = LinearFeatureBaseline(get_input_size(env))
    sampler = MultiTaskSampler(
        config["env-name"],
        env_kwargs=config.get("env-kwargs", {}),
        batch_size=config["fast-batch-size"],
        policy=policy,
        baseline=baseline,
        env=env,
        seed=seed,
        num_workers=workers,
    )
    learner = MAMLTRPO(policy, fast_lr=config["fast-lr"], first_order=config["first-order"])
    for _ in range(iterations):
        t0 = time.perf_counter()
        tasks = sampler.sample_tasks(num_tasks=config["meta-batch-size"])
        futures = sampler.sample_async(
            tasks,
            num_steps=config["num-steps"],
            fast_lr=config["fast-lr"],
            gamma=config["gamma"],
            gae_lambda=config["gae-lambda"],
            device="cpu",
        )
        learner.step(
            *futures,
            max_kl=config["max-kl"],
            cg_iters=config["cg-iters"],
            cg_damping=config["cg-damping"],
            ls_max_steps=config["ls-max-steps"],
            ls_backtrack_ratio=config["ls-backtrack-ratio"],
        )
        sampler.sample_wait(futures)
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    sampler.close()


def median_ratio(reference: list[float], ours: list[float]) -> float:
    """Median over rounds of reference s/it over ours (each round's medians)."""
    return statistics.median(r / o for r, o in zip(reference, ours, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", metavar="DIR", required=True, help="the reference checkout")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    drive(args.driver, iterations=args.iterations, seed=args.seed, workers=args.workers)


if __name__ == "__main__":
    main()
