"""Checkpoint files: one torch file of tensors plus a JSON config, written atomically.

Format (version 2): ``torch.save`` of a plain dict

    {"format": "metatrade-checkpoint", "version": 2, "kind": <str>,
     "config": <JSON string>, "state": <nested dict of tensors / numbers / strings>,
     "sha256": <hex digest of kind, config and every tensor's bytes, see content_hash>}

so it loads with ``torch.load(path, weights_only=True)`` (no pickled code runs on load).
The digest is checked on load: a torch file stores tensor bytes uncompressed and unchecked,
so bytes flipped on disk would otherwise load as weights of 1e29 and give a wrong result
with no error. Version 1 files (written before the digest) still load, unverified.
Writes go to a temporary file in the same directory, are fsynced, then ``os.replace``d over
the target: a crash mid-write leaves the previous checkpoint intact, never a half file.
Every failure to read or match a checkpoint raises ``CheckpointError`` naming the file and
what is wrong, instead of a pickle or state-dict traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metatrade.io import atomic_write

FORMAT = "metatrade-checkpoint"
VERSION = 2
_READABLE = (1, 2)  # version 1: the same layout without the digest


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
    payload["sha256"] = content_hash(payload)
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
    if payload.get("version") not in _READABLE:
        raise CheckpointError(
            f"checkpoint {path}: format version {payload.get('version')} is not supported "
            f"(this code reads versions {', '.join(map(str, _READABLE))})"
        )
    if payload["version"] >= 2:
        _verify(path, payload)
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


def content_hash(payload: Mapping[str, Any]) -> str:
    """sha256 over a checkpoint's kind, config and state, in a stable order: every leaf of
    the nested state (dict keys sorted) contributes its key path, then for a tensor its
    dtype, shape and raw bytes, for anything else its ``repr``."""
    digest = hashlib.sha256()
    digest.update(repr((payload.get("kind"), payload.get("config"))).encode())
    for key, leaf in _leaves(payload.get("state"), ()):
        digest.update(repr(key).encode())
        if torch.is_tensor(leaf):
            flat = leaf.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{flat.dtype}{tuple(leaf.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(leaf).encode())
    return digest.hexdigest()


def _leaves(obj: Any, key: tuple[str, ...]) -> Any:
    if isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            yield from _leaves(obj[k], (*key, str(k)))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*key, str(i)))
    else:
        yield key, obj


def _verify(path: Path, payload: Mapping[str, Any]) -> None:
    stored = payload.get("sha256")
    try:
        actual = content_hash(payload)
    except (TypeError, RuntimeError, ValueError) as exc:
        actual = f"<unhashable: {exc}>"
    if stored != actual:
        raise CheckpointError(
            f"checkpoint {path}: content hash mismatch (stored sha256 {str(stored)[:16]}..., "
            f"data hashes to {actual[:16]}...): the file was corrupted on disk or in transfer; "
            "use an earlier checkpoint (iter_*.pt, a backup) or re-train"
        )


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
    path: str | os.PathLike[str], module: nn.Module, state: Mapping[str, Any] | None, what: str
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


def env_state(env: Any) -> dict[str, Any]:
    """The mutable state of a ``BatchEnv``, as tensors, to continue its episodes bit for bit
    after a resume (PPO's rollouts run across iterations, unlike meta-training's).

    ``env.state_dict()`` if the env defines one; otherwise every numpy array attribute with
    one entry per environment slot (first axis T*E, or leading axes (T, E)) and the state of
    every numpy ``Generator`` attribute. Per-slot constants come along too: restoring them
    onto the env rebuilt from the same config changes nothing.
    """
    if callable(getattr(env, "state_dict", None)):
        return env.state_dict()
    slots = (env.num_tasks * env.episodes_per_task,)
    grid = (env.num_tasks, env.episodes_per_task)
    state: dict[str, Any] = {"arrays": {}, "generators": {}}
    for name, value in vars(env).items():
        if isinstance(value, np.random.Generator):
            state["generators"][name] = value.bit_generator.state
        elif (
            isinstance(value, np.ndarray)
            and value.dtype.kind in "biuf"
            and (value.shape[:1] == slots or value.shape[:2] == grid)
        ):
            state["arrays"][name] = torch.from_numpy(value.copy())
    return state


def load_env_state(env: Any, state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Put ``env_state``'s output back on an env built like the one it came from."""
    if callable(getattr(env, "load_state_dict", None)):
        env.load_state_dict(state)
        return
    try:
        for name, value in state["arrays"].items():
            own = getattr(env, name)
            if tuple(own.shape) != tuple(value.shape) or own.dtype != value.numpy().dtype:
                raise ValueError(f"{name}: {tuple(value.shape)} vs the env's {own.shape}")
            setattr(env, name, value.numpy().copy())
        for name, value in state["generators"].items():
            getattr(env, name).bit_generator.state = value
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path}: the environment state does not fit this environment ({exc}); "
            "resume with the run's own config"
        ) from exc
