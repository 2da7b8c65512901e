"""Run checkpoints: everything needed to continue a run bit for bit.

A run checkpoint is an ``agents.checkpoint`` file (atomic write, ``torch.load(weights_only=
True)``-loadable, ``CheckpointError`` on anything wrong) of kind ``"MetaTrainer"`` or
``"Trainer"`` holding:

- ``learner``: the meta-learner's (or agent's) state dict: meta-parameters, optimizer state;
- ``iteration``: completed iterations;
- ``rng``: the trainer's RNG streams (numpy ``bit_generator.state``, torch ``get_state()``);
- ``config``: the resolved ``RunConfig`` (as JSON, in the file's config slot).

Resuming restores all four, so the remaining iterations draw the same random numbers as an
uninterrupted run and end with the same parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from metatrade.agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metatrade.training.config import ConfigError, RunConfig, validate_config

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


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


def save_run_checkpoint(
    path: str | Path,
    kind: str,
    cfg: RunConfig,
    iteration: int,
    learner_state: dict[str, Any],
    rng: RNGStreams,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a run checkpoint (see the module docstring for the layout)."""
    state = {
        "iteration": int(iteration),
        "learner": learner_state,
        "rng": rng.state_dict(),
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
