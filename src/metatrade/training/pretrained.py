"""The exact estimator's fair "pretrained" start, as a run artefact.

A multi-task policy trained on the same exact objective as MAML over all training tasks,
with MAML's budget of gradient evaluations (``metatrade.meta.pretrain``). It is saved in the
run directory (``pretrained/params.pt``) so that ``evaluate`` and the walk-forward protocol
find it beside the meta-parameters, like the PPO baseline in ``ppo/``: a checkpoint file
(``agents.checkpoint``: atomic write, sha256 checked on load, ``CheckpointError`` for a
changed or damaged file) carrying the run's id, so a start left by a replaced run is refused.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metatrade.agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metatrade.agents.networks.base import Policy
from metatrade.seeding import derive_seed
from metatrade.training.artefacts import PRETRAINED_FILE, find_artefact, run_record
from metatrade.training.config import RunConfig

KIND = "PretrainedStart"
BACKGROUND_MIN_STEPS = 1_000
"""Below this many Adam steps the start trains in the command's own process: a child
process first spends 5-10 s importing torch and loading the tasks."""


def train_pretrained(cfg: RunConfig, family: Any, policy: Policy) -> dict[str, Any]:
    """Adam on the mean exact objective for ``num_meta_iterations x (K + 1)`` steps from a
    fresh initialisation of ``policy``'s architecture (seeded from ``run.seed``)."""
    from metatrade.evaluation.protocol import random_start
    from metatrade.meta.pretrain import gradient_evaluations_per_iteration, pretrain_on_objective
    from metatrade.training.build import make_meta_config

    meta = make_meta_config(cfg)
    fresh = random_start(policy, seed=derive_seed(cfg.run.seed, "pretrained", "weights")).policy
    steps = cfg.meta.num_meta_iterations * gradient_evaluations_per_iteration(meta)
    rng = np.random.default_rng(derive_seed(cfg.run.seed, "pretrained", "windows"))
    params, losses = pretrain_on_objective(fresh, family, config=meta, num_steps=steps, rng=rng)
    return {"params": params, "losses": losses, "steps": steps}


def save_pretrained(
    run_dir: str | Path, params: dict[str, torch.Tensor], *, run_id: str | None = None
) -> Path:
    """Write the start's parameters to ``<run_dir>/pretrained/params.pt`` (atomically, with
    their sha256 and the run's id)."""
    cpu = {k: v.detach().cpu() for k, v in params.items()}
    return save_checkpoint(
        Path(run_dir) / PRETRAINED_FILE, KIND, {"run": run_record(run_id)}, {"params": cpu}
    )


def load_pretrained(
    run_dir: str | Path, *, run_id: str | None = None
) -> dict[str, torch.Tensor] | None:
    """The run's saved pretrained start (hash-verified, of run ``run_id``), or None when it
    has none. ``CheckpointError`` for a damaged file, a file of another kind or run."""
    path = find_artefact(Path(run_dir), PRETRAINED_FILE, run_id, "pretrained start")
    return None if path is None else load_pretrained_file(path)


def load_pretrained_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters of a pretrained-start file (``CheckpointError`` if unusable)."""
    _, state = load_checkpoint(path, KIND)
    params = state.get("params") if isinstance(state, dict) else None
    if not isinstance(params, dict) or not all(torch.is_tensor(v) for v in params.values()):
        raise CheckpointError(f"pretrained start {path}: holds no parameter tensors")
    return params


def wants_pretrained(cfg: RunConfig) -> bool:
    """With the exact estimator and ``pretrained`` among ``evaluation.baselines``, a run
    trains the fair "pretrained" start (the sampled estimator's is the PPO baseline)."""
    return cfg.meta.exact_objective and "pretrained" in cfg.evaluation.baselines


def pretrained_for_run(
    cfg: RunConfig,
    family: Any,
    policy: Policy,
    console: Any,
    *,
    resume: bool,
    run_id: str | None,
    job: PretrainingJob | None = None,
) -> dict[str, torch.Tensor] | None:
    """The run's fair "pretrained" start (``train_pretrained``) when ``wants_pretrained``,
    saved in the run directory where ``evaluate`` finds it (a resumed run reuses a saved
    one); ``metatrade meta-train`` and the demo call it after meta-training, ``job``: the
    start already training in a child process (``PretrainingJob``). None otherwise."""
    if not wants_pretrained(cfg):
        return None
    if resume and (saved := load_pretrained(cfg.run_dir(), run_id=run_id)) is not None:
        console.print("pretrained start on the exact objective: loaded from the run")
        return saved
    t0 = time.perf_counter()
    out = _child_result(job, console) if job is not None else None
    if out is None:
        out = train_pretrained(cfg, family, policy) | {"seconds": time.perf_counter() - t0}
    path = save_pretrained(cfg.run_dir(), out["params"], run_id=run_id)
    where = ", in a child process beside meta-training" if out.get("child") else ""
    console.print(
        f"pretrained start on the exact objective: {out['steps']} Adam steps (MAML's gradient "
        f"evaluations), {out['seconds']:.0f} s{where} -> {path}"
    )
    return out["params"]


class PretrainingError(RuntimeError):
    """The child process training the pretrained start failed."""


class PretrainingJob:
    """The pretrained start trained in a child process while this one meta-trains.

    The start never sees MAML's parameters, so the two trainings are independent: on a
    machine with two free cores ``meta-train`` takes about the longer of the two instead of
    their sum. The child rebuilds the family from the run's config (its synthetic tasks are
    already written; the bars come from the disk cache), uses the run's torch threads and
    seeds, and sends the parameters back: they are bitwise those of ``train_pretrained`` in
    this process (tested). It ignores Ctrl-C (this process decides) and is stopped with it.
    """

    def __init__(self, cfg: RunConfig) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe after torch's threads
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_pretrain_in_child, args=(cfg, send), daemon=True, name="metatrade-pretrain"
        )
        self._t0 = time.perf_counter()
        self._proc.start()
        send.close()
        self.seconds = 0.0

    @classmethod
    def start_if_useful(cls, cfg: RunConfig, *, resume: bool) -> PretrainingJob | None:
        """A job when the run wants the start, has none saved to resume, trains it long
        enough to repay a child's start-up, on the CPU, with a second core to run on (and
        no Ray workers to take it)."""
        from metatrade.meta.pretrain import gradient_evaluations_per_iteration
        from metatrade.training.build import make_meta_config

        if not wants_pretrained(cfg) or cfg.run.device != "cpu" or cfg.run.backend == "ray":
            return None
        if _usable_cpus() < 2:
            return None
        if resume and (cfg.run_dir() / PRETRAINED_FILE).is_file():
            return None
        steps = cfg.meta.num_meta_iterations * gradient_evaluations_per_iteration(
            make_meta_config(cfg)
        )
        return cls(cfg) if steps >= BACKGROUND_MIN_STEPS else None

    def result(self) -> dict[str, Any]:
        """Wait for the child: its ``{"params", "steps", "seconds", "child"}``, or a
        ``PretrainingError``."""
        try:
            message = self._recv.recv()
        except (EOFError, OSError):
            self._proc.join()
            message = {"error": f"the process ended with exit code {self._proc.exitcode}"}
        finally:
            self._proc.join()
            self._recv.close()
            self.seconds = time.perf_counter() - self._t0
        if "error" in message:
            raise PretrainingError(f"training the pretrained start: {message['error']}")
        params = {k: torch.from_numpy(v) for k, v in message["params"].items()}
        return {"params": params, "steps": message["steps"], "seconds": self.seconds, "child": True}

    def stop(self) -> None:
        """End the child if it still runs (this process stops early)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()


def _child_result(job: PretrainingJob, console: Any) -> dict[str, Any] | None:
    """The child's start, or None (with a warning) if it failed: the caller trains the same
    start in its own process, so a failed child costs time, never the run."""
    try:
        return job.result()
    except PretrainingError as err:
        console.print(f"warning: {err}; training it in this process instead")
        return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pretrain_in_child(cfg: RunConfig, send: Any) -> None:
    """The child's work: ``train_pretrained`` on the run's family, the result sent back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        from metatrade.runtime import configure_cpu
        from metatrade.training.build import make_family, make_policy_for

        configure_cpu(cfg.run.torch_threads, cfg.run.keep_freed_memory)
        family = make_family(cfg)
        policy = make_policy_for(cfg, family)
        assert isinstance(policy, Policy)  # a trading family's (``wants_pretrained``)
        out = train_pretrained(cfg, family, policy)
        # as numpy arrays: torch sends tensors through shared memory, gone once we exit
        params = {k: v.detach().cpu().numpy() for k, v in out["params"].items()}
        send.send({"params": params, "steps": out["steps"]})
    except Exception as err:  # reported by the parent in one line
        send.send({"error": f"{type(err).__name__}: {err}"})
    finally:
        send.close()
