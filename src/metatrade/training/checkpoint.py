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
start a fresh run over a directory that already holds one of its kind unless asked to, and
then moves the replaced run aside whole (``training.artefacts``). Every checkpoint carries
the run's id (``run_id``), so no command mixes artefacts of two runs.

Saving is guarded: a Ctrl-C during a write is held until the file is in place (``saving,
please wait``), and a failed write (a full disk) is one ``CheckpointWriteError`` line that
says the previous checkpoint is intact; the temporary file is removed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metatrade.agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metatrade.errors import UserError
from metatrade.io import RunDirError, interrupts_deferred
from metatrade.training.artefacts import (
    CHECKPOINT_DIR,
    PPO_AGENT,
    PPO_DIR,
    RESULT_DIRS,
    RUN_ENTRIES,
    find_artefact,
    read_run_id,
    replace_run,
    resolve_checkpoint,
    run_id_for,
)
from metatrade.training.config import ConfigError, RunConfig, validate_config

LAST = "last.pt"
# What a fresh run of each kind moves aside with overwrite=True: meta-training, the whole run
# (its baselines and results were made for the run it replaces); PPO, the baseline and the
# results that compared against it.
_REPLACED = {"MetaTrainer": RUN_ENTRIES, "PPOTrainer": (PPO_DIR, *RESULT_DIRS)}


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


class TrainingDiverged(UserError):
    """An update made parameters non-finite (inf / nan): the run stops at that iteration and
    keeps its last good checkpoint (``iteration``, ``path``; None: nothing was saved)."""

    def __init__(
        self, what: str, *, iteration: int, names: list[str], saved: int, path: Path | None
    ) -> None:
        self.iteration, self.saved, self.path = iteration, saved, path
        kept = "nothing was saved"
        if path is not None:
            kept = f"the last good checkpoint {path} (iteration {saved}) is kept"
        super().__init__(
            f"{what} iteration {iteration} made parameters non-finite (inf or nan in "
            f"{', '.join(names[:4])}{', ...' if len(names) > 4 else ''}): the run stopped and "
            f"{kept}; lower the learning rates (meta.lr, meta.inner_lr, ppo.learning_rate) or "
            "check the data"
        )


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is intact."""


def non_finite(params: Mapping[str, Any]) -> list[str]:
    """Names of the tensors in ``params`` holding an inf or a nan (checked after updates;
    one reduction, and one device sync, when all are finite)."""
    finite = [torch.isfinite(v.detach()).all() for v in params.values()]
    if not finite or bool(torch.stack(finite).all()):
        return []
    return [k for k, ok in zip(params, finite, strict=True) if not bool(ok)]


class LoopCheckpoints:
    """A training loop's checkpoints: every ``interval`` iterations and at the end, plus in
    memory a copy of the last completed iteration that ``interrupted`` (Ctrl-C) and
    ``diverged`` (non-finite parameters) write, so a stop loses at most the iteration in
    progress. ``path`` None: saves nothing. ``extra`` goes into every checkpoint
    (meta-training: the exact training tasks); ``run_id`` names the run (``artefacts``)."""

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
        run_id: str | None = None,
    ) -> None:
        self.path, self.kind, self.cfg, self.rng = path, kind, cfg, rng
        self.extra, self.run_id = extra, run_id
        self.interval, self.total, self.saved = interval, total, start
        self.pending: tuple[int, dict[str, Any], dict[str, Any]] | None = None

    def after(self, iteration: int, state: Callable[[], dict[str, Any]]) -> None:
        """Iteration ``iteration`` finished; ``state()`` is the learner's state now."""
        if self.path is None:
            return
        # a Ctrl-C meanwhile is held until the iteration is kept (on disk or in memory)
        with interrupts_deferred("saving the checkpoint, please wait"):
            rng = self.rng.state_dict()
            if iteration % self.interval == 0 or iteration == self.total:
                self._write(iteration, state(), rng)
            else:
                self.pending = (iteration, copy.deepcopy(state()), copy.deepcopy(rng))

    def _write(self, iteration: int, state: dict[str, Any], rng: dict[str, Any]) -> None:
        assert self.path is not None
        try:
            save_run_checkpoint(
                self.path,
                self.kind,
                self.cfg,
                iteration,
                state,
                rng,
                extra=self.extra,
                run_id=self.run_id,
            )
        except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as either
            kept = f"iteration {self.saved}" if self.saved else "none yet"
            raise CheckpointWriteError(
                f"could not write checkpoint {self.path} for iteration {iteration} "
                f"({_reason(exc)}); the previous checkpoint is intact ({kept}): free disk "
                "space, then continue with --resume"
            ) from None
        self.saved, self.pending = iteration, None

    def flush(self) -> None:
        """Write the last completed iteration if it is only in memory; a Ctrl-C meanwhile
        is dropped ("saving, please wait"): a second Ctrl-C must not cut the save short."""
        if self.pending is not None:
            with interrupts_deferred("saving the last completed iteration, please wait", False):
                self._write(*self.pending)

    def interrupted(self, what: str) -> TrainingInterrupted:
        self.flush()
        path = self.path if self.saved > 0 else None
        return TrainingInterrupted(what, self.saved, self.total, path)

    def diverged(self, what: str, iteration: int, names: list[str]) -> TrainingDiverged:
        """Iteration ``iteration`` left non-finite ``names``: save the last good one."""
        self.flush()
        path = self.path if self.saved > 0 else None
        return TrainingDiverged(what, iteration=iteration, names=names, saved=self.saved, path=path)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def checkpoint_path(run_dir: str | Path, iteration: int | None = None) -> Path:
    """``<run_dir>/checkpoints/last.pt``, or ``iter_<n>.pt`` for a given iteration."""
    name = LAST if iteration is None else f"iter_{iteration:06d}.pt"
    return Path(run_dir) / CHECKPOINT_DIR / name


def claim_run_dir(
    run_dir: str | Path, kind: str, *, overwrite: bool
) -> tuple[str | None, Path | None]:
    """Before a fresh (not resumed) run of ``kind`` writes ``run_dir`` (the top run directory;
    PPO writes under ``ppo/``): refuse if it already holds a checkpoint of that kind, or with
    ``overwrite`` move the replaced run aside first (meta-training: the whole run; PPO: its
    baseline and the results compared against it; ``artefacts.replace_run``), so nothing of
    the old run mixes with the new one. Returns ``(run id, where the old run went)``. Call it
    holding the lock."""
    run_dir = Path(run_dir)
    own = run_dir / PPO_DIR if kind == "PPOTrainer" else run_dir
    existing = [p for p in sorted((own / CHECKPOINT_DIR).glob("*.pt")) if p.name != "ppo.pt"]
    moved = None
    if existing:
        if not overwrite:
            what = "meta-training" if kind == "MetaTrainer" else "PPO training"
            raise RunDirError(
                f"run directory {run_dir} already holds a {what} run ({existing[-1]}); to "
                "continue it pass --resume (Python: meta_train(resume=<run dir>) or "
                "train(resume=...)); to start over pass --overwrite (Python: Trainer(..., "
                f"overwrite=True)), which moves the old run to {run_dir}.replaced-<time>/; or "
                "write elsewhere with --out (Python: run_dir=...)"
            )
        moved = replace_run(run_dir, _REPLACED[kind])
    run_id = run_id_for(run_dir)
    return run_id, moved


def save_run_checkpoint(
    path: str | Path,
    kind: str,
    cfg: RunConfig,
    iteration: int,
    learner_state: dict[str, Any],
    rng: RNGStreams | dict[str, Any],
    extra: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> Path:
    """Atomically write a run checkpoint (see the module docstring for the layout); ``rng``
    is the run's streams or a snapshot of their ``state_dict()``; ``run_id`` the run's id."""
    state = {
        "iteration": int(iteration),
        "learner": learner_state,
        "rng": rng.state_dict() if isinstance(rng, RNGStreams) else rng,
        "extra": dict(extra or {}),
        "run_id": run_id,
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


def check_run_id(path: str | Path, state: Mapping[str, Any], run_dir: Path | None) -> str | None:
    """The run id of the checkpoint ``path`` being resumed (``state``), refused when its run
    directory ``run_dir`` records another run (a checkpoint copied over from elsewhere)."""
    run_id = state.get("run_id")
    recorded = read_run_id(run_dir) if run_dir is not None else None
    if run_id is not None and recorded is not None and run_id != recorded:
        raise CheckpointError(
            f"checkpoint {path} belongs to run {run_id}, but {run_dir} holds run {recorded}; "
            "resume a run from its own directory"
        )
    return run_id if run_id is not None else recorded


# Config sections that must match between a checkpoint and the run resuming from it: every
# one that changes the run's mathematics (the exact objective's ``objective`` included).
RESUME_SECTIONS = {
    "MetaTrainer": ("data", "env", "policy", "meta", "objective"),
    "PPOTrainer": ("data", "env", "policy", "ppo"),
}


def restore_run(
    resume: str | Path,
    target: Any,
    kind: str,
    *,
    config: RunConfig,
    rng: RNGStreams,
    run_dir: Path | None,
) -> tuple[int, str | None]:
    """Load checkpoint ``resume`` of ``kind`` into ``target`` (a MetaLearner, or a PPOAgent)
    and ``rng``, after checking it is this run's (``check_same_run`` on ``RESUME_SECTIONS``,
    ``check_run_id`` against ``run_dir``); returns ``(iteration, run id)``."""
    ck_cfg, state = load_run_checkpoint(resume, kind)
    check_same_run(resume, ours=config, theirs=ck_cfg, sections=RESUME_SECTIONS[kind])
    run_id = check_run_id(resume, state, run_dir)
    try:
        if kind == "PPOTrainer":
            target.load_training_state(state["learner"], resume)
        else:
            target.load_state_dict(state["learner"])
    except CheckpointError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {resume}: the saved state does not fit this model "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    rng.load_state_dict(state["rng"])
    return int(state["iteration"]), run_id


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


def ppo_baseline_path(run_dir: str | Path, run_id: str | None = None) -> Path | None:
    """The PPO baseline trained beside a meta-training run (``<run>/ppo/checkpoints/ppo.pt``),
    checked to be of run ``run_id`` (``artefacts.find_artefact``), or None when there is none."""
    return find_artefact(Path(run_dir), PPO_AGENT, run_id, "PPO baseline")
