"""A run directory's identity and artefacts: one resolution, used by every command.

A run directory holds one run. When the run is created, ``run.json`` records its run id (a
random uuid) and creation time. Every artefact written for the run carries that id besides
its content hash: the checkpoints (``checkpoints/*.pt``, ``ppo/checkpoints/last.pt``), the
PPO baseline (``ppo/checkpoints/ppo.pt``), the pretrained start (``pretrained/params.pt``)
and the results' ``provenance.json`` (``eval/``, ``reports/``, ``adapted/``,
``walkforward/``: the run id, the checkpoint's sha256 and every file's sha256).

``resolve_run`` is the one function that finds a run's artefacts from a checkpoint file or
run directory; it refuses (``CheckpointError``, one line) an artefact whose run id is not
the run's, so a baseline left by a replaced run can never be evaluated against a new one.
``replace_run`` moves a replaced run aside as a whole (``<run>.replaced-<time>/``) instead
of deleting part of it. Runs written before run ids existed have none: their artefacts are
accepted as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metatrade.agents.checkpoint import CheckpointError, load_checkpoint
from metatrade.io import LOCK_NAME, atomic_write_text, run_dir_lock

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
PPO_DIR = "ppo"  # a PPO run's own sub-directory of the run directory
PPO_AGENT = Path(PPO_DIR) / CHECKPOINT_DIR / "ppo.pt"
PRETRAINED_FILE = Path("pretrained") / "params.pt"
PROVENANCE = "provenance.json"
RESULT_DIRS = ("eval", "reports", "adapted", "walkforward")
# What a run writes at the top of its directory: what ``replace_run`` moves aside (a user's
# own files in the folder stay where they are).
RUN_ENTRIES = (
    RUN_FILE,
    "config.yaml",
    "logs",
    CHECKPOINT_DIR,
    PPO_DIR,
    "pretrained",
    "synthetic_data",
    *RESULT_DIRS,
)


# ---- the run id -----------------------------------------------------------------------------
def read_run_id(run_dir: str | Path) -> str | None:
    """The run id recorded in ``<run_dir>/run.json`` (None: no run, or one from before ids)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"{path}: unreadable run record (expected JSON with a run_id); restore it or move "
            "the run directory aside"
        ) from None


def _new_run_id(run_dir: Path) -> str:
    run_id = uuid.uuid4().hex
    record = {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(run_dir / RUN_FILE, json.dumps(record) + "\n")
    return run_id


def run_id_for(run_dir: str | Path) -> str | None:
    """The id a fresh run in ``run_dir`` writes its artefacts with: the directory's own run id,
    else that of a checkpoint already there (a run from before ids: None), else a new one."""
    run_dir = Path(run_dir)
    recorded = read_run_id(run_dir)
    if recorded is not None:
        return recorded
    last = run_dir / CHECKPOINT_DIR / "last.pt"
    if last.is_file():
        return _checkpoint_run_id(last)
    run_dir.mkdir(parents=True, exist_ok=True)
    return _new_run_id(run_dir)


def _checkpoint_run_id(path: Path) -> str | None:
    """The run id an artefact file carries (run checkpoints: in the state; agent files and
    the pretrained start: in the config's ``run`` record); None for files without one."""
    config, state = load_checkpoint(path)
    if isinstance(state, dict) and state.get("run_id") is not None:
        return str(state["run_id"])
    record = config.get("run") if isinstance(config, dict) else None
    if isinstance(record, dict) and record.get("run_id") is not None:
        return str(record["run_id"])
    return None


def run_record(run_id: str | None) -> dict[str, Any]:
    """What an agent file or the pretrained start keeps in its config to name its run."""
    return {"run_id": run_id}


def check_artefact(path: Path, run_id: str | None, what: str) -> Path:
    """``path`` if it belongs to run ``run_id``; ``CheckpointError`` naming both ids if not.

    A run without an id (written before ids) accepts any artefact; a run with one refuses an
    artefact without one (it was written by another run, or before ids)."""
    if run_id is None:
        return path
    found = _checkpoint_run_id(path)
    if found != run_id:
        raise CheckpointError(
            f"{what} {path} belongs to another run (run id {found or 'none'}, this run is "
            f"{run_id}): it was left by a replaced run or copied in; retrain it for this run "
            "(e.g. metatrade train --out <run> --overwrite) or move it away"
        )
    return path


# ---- resolving a run ------------------------------------------------------------------------
@dataclass(frozen=True)
class RunArtefacts:
    """Everything of one run that a command reads, each verified to be of this run.

    ``run_dir``: the folder holding the run (of a loose checkpoint file: its folder);
    ``checkpoint``: the meta-training checkpoint; ``run_id``: the run's id (None: from before
    ids); ``ppo`` / ``pretrained``: the PPO baseline agent file and the pretrained start,
    None when the run has none."""

    run_dir: Path
    checkpoint: Path
    run_id: str | None
    ppo: Path | None
    pretrained: Path | None


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory of ``<run>/checkpoints/<file>.pt`` (or of a run directory), else the
    folder of a loose checkpoint file: never a folder above it."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file path or a run directory (its ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        last = path / CHECKPOINT_DIR / "last.pt"
        if not last.is_file():
            raise CheckpointError(
                f"run directory {path} has no checkpoint ({CHECKPOINT_DIR}/last.pt); "
                "pass a checkpoint file or a run directory that finished an interval"
            )
        return last
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file or run directory")
    return path


def resolve_run(checkpoint: str | Path) -> RunArtefacts:
    """The run of a checkpoint file or run directory and its artefacts, each checked to
    carry the run's id: the one place every command (evaluate, adapt, backtest,
    walkforward, signal, demo, resume) finds them. ``CheckpointError`` for a checkpoint of
    another run than its directory's, or an artefact of another run."""
    path = resolve_checkpoint(checkpoint)
    run_dir = run_dir_of(path)
    run_id = _checkpoint_run_id(path)
    recorded = read_run_id(run_dir) if path.parent.name == CHECKPOINT_DIR else None
    if run_id is not None and recorded is not None and run_id != recorded:
        raise CheckpointError(
            f"checkpoint {path} belongs to run {run_id}, but {run_dir} holds run {recorded} "
            "(its run.json); pass that run's own checkpoint"
        )
    run_id = run_id if run_id is not None else recorded
    return RunArtefacts(
        run_dir=run_dir,
        checkpoint=path,
        run_id=run_id,
        ppo=find_artefact(run_dir, PPO_AGENT, run_id, "PPO baseline"),
        pretrained=find_artefact(run_dir, PRETRAINED_FILE, run_id, "pretrained start"),
    )


def find_artefact(run_dir: Path, name: Path, run_id: str | None, what: str) -> Path | None:
    """``<run_dir>/<name>`` if present (checked to be of run ``run_id``), else None."""
    path = Path(run_dir) / name
    return check_artefact(path, run_id, what) if path.is_file() else None


# ---- replacing a run ------------------------------------------------------------------------
def replace_run(run_dir: str | Path, entries: tuple[str, ...] = RUN_ENTRIES) -> Path | None:
    """Move what the run in ``run_dir`` wrote (``entries`` of it) into a new sibling folder
    ``<run>.replaced-<time>/`` and return it (None: nothing to move). Call it holding the
    run directory's lock; a nested run (``ppo/``) being written by another process is a
    ``RunDirError`` and nothing moves."""
    run_dir = Path(run_dir)
    present = [run_dir / name for name in entries if (run_dir / name).exists()]
    if not present:
        return None
    full = run_dir.resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = full.parent / f"{full.name}.replaced-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = full.parent / f"{full.name}.replaced-{stamp}-{n}"
    with contextlib.ExitStack() as locks:  # a nested run (ppo/) must not be being written
        for path in present:
            if path.is_dir() and (path / LOCK_NAME).exists():
                locks.enter_context(run_dir_lock(path))
        target.mkdir(parents=True)
        for path in present:
            os.replace(path, target / path.name)
    return target


# ---- provenance of results ------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def stamp_results(folder: str | Path, run: RunArtefacts | None) -> Path | None:
    """Write ``<folder>/provenance.json``: the run id, the checkpoint evaluated and its sha256,
    and the sha256 of every file the folder holds (so a result says which run it measured
    and that it was not edited since). None (nothing written) without a run."""
    if run is None:
        return None
    folder = Path(folder)
    files = {
        str(p.relative_to(folder)): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (PROVENANCE, LOCK_NAME) and not p.name.endswith(".tmp")
    }
    record = {
        "run_id": run.run_id,
        "run_dir": str(run.run_dir.resolve()),
        "checkpoint": str(run.checkpoint.resolve()),
        "checkpoint_sha256": file_sha256(run.checkpoint),
        "files": files,
    }
    return atomic_write_text(folder / PROVENANCE, json.dumps(record, indent=1) + "\n")
