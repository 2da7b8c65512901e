"""Checkpoint files: one torch file of tensors plus a JSON config, written atomically.

Format (version 1): ``torch.save`` of a plain dict

    {"format": "metatrade-checkpoint", "version": 1, "kind": <str>,
     "config": <JSON string>, "state": <nested dict of tensors / numbers / strings>}

so it loads with ``torch.load(path, weights_only=True)`` (no pickled code runs on load).
Writes go to a temporary file in the same directory, are fsynced, then ``os.replace``d over
the target: a crash mid-write leaves the previous checkpoint intact, never a half file.
Every failure to read or match a checkpoint raises ``CheckpointError`` naming the file and
what is wrong, instead of a pickle or state-dict traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metatrade.io import atomic_write

FORMAT = "metatrade-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint is missing, corrupted, truncated, or does not fit what loads it."""


def save_checkpoint(
    path: str | os.PathLike[str], kind: str, config: Mapping[str, Any], state: Mapping[str, Any]
) -> Path:
    """Atomically write ``state`` (tensors, nested dicts, numbers) and ``config`` (JSON-able).

    ``kind`` names what is saved (e.g. "PPOAgent") and is checked on load.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "config": json.dumps(dict(config), sort_keys=True),
        "state": _detach(state),
    }
    return atomic_write(path, lambda f: torch.save(payload, f), binary=True)


def load_checkpoint(
    path: str | os.PathLike[str], kind: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint; returns ``(config, state)``.

    Raises:
        CheckpointError: the file is missing, unreadable (truncated / corrupted / not a torch
            file), not a metatrade checkpoint, of another version, or of another ``kind``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad zip/pickle data
        raise CheckpointError(
            f"checkpoint {path}: cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
            "the file is truncated or corrupted: use an earlier checkpoint or re-train"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path}: not a metatrade checkpoint (no format={FORMAT!r} marker)"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {payload.get('version')} is not supported "
            f"(this code reads version {VERSION})"
        )
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint {path}: holds a {payload.get('kind')!r}, not a {kind!r}; load it with "
            f"the matching class"
        )
    try:
        config = json.loads(payload["config"])
        state = payload["state"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: config or state is missing or corrupted"
        ) from exc
    return config, state


def check_fields(
    path: str | os.PathLike[str], expected: Mapping[str, Any], found: Mapping[str, Any]
) -> None:
    """Raise ``CheckpointError`` listing every field where ``found`` (the checkpoint's)
    differs from ``expected`` (what the caller needs), e.g. the observation shape."""
    diffs = [
        f"{name}: checkpoint has {found.get(name)!r}, expected {value!r}"
        for name, value in expected.items()
        if _jsonable(found.get(name)) != _jsonable(value)
    ]
    if diffs:
        raise CheckpointError(f"checkpoint {path} is incompatible: " + "; ".join(diffs))


def load_module_state(
    path: str | os.PathLike[str], module: nn.Module, state: Mapping[str, Any], what: str
) -> None:
    """``module.load_state_dict(state)`` with missing / unexpected / mis-shaped tensors
    reported as a ``CheckpointError`` naming ``what`` and the file."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path}: {what} state is missing")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and (not torch.is_tensor(state[k]) or state[k].shape != v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if shapes:
            parts.append(f"shape (checkpoint vs model) {shapes[:5]}")
        raise CheckpointError(
            f"checkpoint {path}: {what} does not match the model: " + "; ".join(parts)
        )
    module.load_state_dict(state)


def _detach(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu().clone()
    if isinstance(obj, Mapping):
        return {k: _detach(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_detach(v) for v in obj)
    return obj


def _jsonable(obj: Any) -> Any:
    """Normalise tuples to lists so config values compare after a JSON round trip."""
    return json.loads(json.dumps(obj)) if obj is not None else None
