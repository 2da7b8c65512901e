"""Run checkpoints: everything needed to continue a run bit for bit.

A run checkpoint is an ``agents.checkpoint`` file (atomic write, ``torch.load(weights_only=
True)``-loadable, content hash checked, ``CheckpointError`` on anything wrong) of kind
``"MetaTrainer"`` or ``"PPOTrainer"`` holding:

- ``learner``: the meta-learner's state dict (meta-parameters, optimizer state), or the PPO
  agent's state plus its rollout state (the env's per-slot state, current observations);
- ``iteration``: completed iterations;
- ``rng``: the trainer's RNG streams (numpy ``bit_generator.state``, torch ``get_state()``);
- ``config``: the resolved ``RunConfig`` (as JSON, in the file's config slot).

Resuming restores all four, so the remaining iterations draw the same random numbers as an
uninterrupted run and end with the same parameters.

Each kind of run owns its files: meta-training writes ``config.yaml``, ``logs/`` and
``checkpoints/`` at the top of the run directory; PPO training writes the same layout under
``<run_dir>/ppo/`` (where ``evaluate`` finds the baseline). ``claim_run_dir`` refuses to
start a fresh run over a directory that already holds one of its kind unless asked to.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metatrade.agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metatrade.io import LOCK_NAME, RunDirError
from metatrade.training.config import ConfigError, RunConfig, validate_config

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
PPO_DIR = "ppo"  # a PPO run's own sub-directory of the run directory
# What a fresh run of each kind replaces with overwrite=True: its own files and, for the
# meta-policy, the results derived from it (evaluations, reports, adapted parameters).
_OWNED = {
    "MetaTrainer": ("config.yaml", "logs", CHECKPOINT_DIR, "eval", "reports", "adapted"),
    "PPOTrainer": ("config.yaml", "logs", CHECKPOINT_DIR),
}


class RNGStreams:
    """The run's two random streams, seeded once and checkpointable.

    numpy drives task sampling and environment resets; torch drives action sampling and
    weight initialisation. Nothing in a run touches the global RNGs.
    """

    def __init__(self, seed: int) -> None:
        self.numpy = np.random.default_rng(seed)
        self.torch = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"numpy": self.numpy.bit_generator.state, "torch": self.torch.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.numpy.bit_generator.state = state["numpy"]
        self.torch.set_state(state["torch"])


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a training loop, after the last completed iteration was saved.

    ``iteration``: the iteration the saved checkpoint ``path`` holds (0 and None: nothing was
    saved); ``message`` says so in words for the terminal.
    """

    def __init__(self, what: str, iteration: int, total: int, path: Path | None) -> None:
        self.iteration, self.total, self.path = iteration, total, path
        if path is None:
            self.message = f"{what} stopped before its first iteration finished: nothing was saved"
        else:
            self.message = (
                f"{what} stopped: iterations 1-{iteration} of {total} are saved in {path} "
                "(only the unfinished iteration is lost)"
            )
        super().__init__(self.message)


class LoopCheckpoints:
    """A training loop's checkpoints: every ``interval`` iterations and at the end, plus in
    memory a copy of the last completed iteration that ``interrupted`` writes on Ctrl-C, so
    an interrupt loses at most the iteration in progress. ``path`` None: saves nothing.
    ``extra`` goes into every checkpoint (meta-training: the exact training tasks)."""

    def __init__(
        self,
        path: Path | None,
        kind: str,
        cfg: RunConfig,
        rng: RNGStreams,
        *,
        interval: int,
        total: int,
        start: int,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path, self.kind, self.cfg, self.rng = path, kind, cfg, rng
        self.extra = extra
        self.interval, self.total, self.saved = interval, total, start
        self.pending: tuple[int, dict[str, Any], dict[str, Any]] | None = None

    def after(self, iteration: int, state: Callable[[], dict[str, Any]]) -> None:
        """Iteration ``iteration`` finished; ``state()`` is the learner's state now."""
        if self.path is None:
            return
        rng = self.rng.state_dict()
        if iteration % self.interval == 0 or iteration == self.total:
            self._write(iteration, state(), rng)
        else:
            self.pending = (iteration, copy.deepcopy(state()), copy.deepcopy(rng))

    def _write(self, iteration: int, state: dict[str, Any], rng: dict[str, Any]) -> None:
        assert self.path is not None
        save_run_checkpoint(self.path, self.kind, self.cfg, iteration, state, rng, extra=self.extra)
        self.saved, self.pending = iteration, None

    def interrupted(self, what: str) -> TrainingInterrupted:
        if self.pending is not None:
            self._write(*self.pending)
        path = self.path if self.saved > 0 else None
        return TrainingInterrupted(what, self.saved, self.total, path)


def checkpoint_path(run_dir: str | Path, iteration: int | None = None) -> Path:
    """``<run_dir>/checkpoints/last.pt``, or ``iter_<n>.pt`` for a given iteration."""
    name = LAST if iteration is None else f"iter_{iteration:06d}.pt"
    return Path(run_dir) / CHECKPOINT_DIR / name


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file path or a run directory (its ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        last = checkpoint_path(path)
        if not last.is_file():
            raise CheckpointError(
                f"run directory {path} has no checkpoint ({CHECKPOINT_DIR}/{LAST}); "
                "pass a checkpoint file or a run directory that finished an interval"
            )
        return last
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file or run directory")
    return path


def claim_run_dir(run_dir: str | Path, kind: str, *, overwrite: bool) -> None:
    """Before a fresh (not resumed) run of ``kind`` writes ``run_dir``: refuse if it already
    holds a checkpoint, or with ``overwrite`` delete that run's files first (see ``_OWNED``),
    so no log or result of the old run mixes with the new one. Call it holding the lock."""
    run_dir = Path(run_dir)
    existing = sorted((run_dir / CHECKPOINT_DIR).glob("*.pt"))
    existing = [p for p in existing if p.name != "ppo.pt" or kind == "PPOTrainer"]
    if not existing:
        return
    if not overwrite:
        what = "meta-training" if kind == "MetaTrainer" else "PPO training"
        raise RunDirError(
            f"run directory {run_dir} already holds a {what} run ({existing[-1]}); continue it "
            "with --resume, replace it with --overwrite, or choose another directory with --out "
            "(Trainer: resume=<run dir>, overwrite=True)"
        )
    for name in _OWNED[kind]:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists() and target.name != LOCK_NAME:
            target.unlink()


def save_run_checkpoint(
    path: str | Path,
    kind: str,
    cfg: RunConfig,
    iteration: int,
    learner_state: dict[str, Any],
    rng: RNGStreams | dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a run checkpoint (see the module docstring for the layout); ``rng``
    is the run's streams or a snapshot of their ``state_dict()``."""
    state = {
        "iteration": int(iteration),
        "learner": learner_state,
        "rng": rng.state_dict() if isinstance(rng, RNGStreams) else rng,
        "extra": dict(extra or {}),
    }
    return save_checkpoint(path, kind, cfg.to_dict(), state)


def load_run_checkpoint(
    path: str | Path, kind: str | None = None
) -> tuple[RunConfig, dict[str, Any]]:
    """Read a run checkpoint; returns ``(config, state)``; ``CheckpointError`` if unusable."""
    path = resolve_checkpoint(path)
    raw_cfg, state = load_checkpoint(path, kind)
    if not isinstance(state, dict) or not {"iteration", "learner", "rng"} <= set(state):
        raise CheckpointError(
            f"checkpoint {path}: not a run checkpoint (needs iteration, learner and rng); "
            "agent checkpoints load with the agent's load_model"
        )
    try:
        cfg = validate_config(raw_cfg, f"checkpoint {path} config")
    except ConfigError as exc:
        raise CheckpointError(
            f"{exc} (the checkpoint was written by an incompatible version)"
        ) from None
    return cfg, state


# Budget keys may grow: a resumed run continues up to the new total.
_BUDGET_KEYS = {"num_meta_iterations", "total_timesteps"}


def check_same_run(
    path: str | Path, *, ours: RunConfig, theirs: RunConfig, sections: tuple[str, ...]
) -> None:
    """``CheckpointError`` unless the run resuming from checkpoint ``path`` has its config
    (the ``sections`` named and the seed; budgets may differ)."""
    mine, saved = ours.to_dict(), theirs.to_dict()
    diffs = [
        f"{section}.{key}"
        for section in sections
        for key in mine[section]
        if key not in _BUDGET_KEYS and mine[section][key] != saved[section].get(key)
    ]
    if mine["run"]["seed"] != saved["run"]["seed"]:
        diffs.append("run.seed")
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was written with a different config ({', '.join(diffs)}); "
            "resume with the run's own config (its run directory's config.yaml)"
        )


def ppo_baseline_path(run_dir: str | Path) -> Path | None:
    """The PPO baseline trained beside a meta-training run (``<run>/ppo/checkpoints/ppo.pt``,
    or a PPO run's own ``checkpoints/ppo.pt``), or None when there is none."""
    run_dir = Path(run_dir)
    found = [run_dir / PPO_DIR / "checkpoints" / "ppo.pt", run_dir / "checkpoints" / "ppo.pt"]
    return next((p for p in found if p.is_file()), None)
