"""The exact estimator's fair "pretrained" start, as a run artefact.

A multi-task policy trained on the same exact objective as MAML over all training tasks,
with MAML's budget of gradient evaluations (``metatrade.meta.pretrain``). It is saved in the
run directory (``pretrained/params.pt``) so that ``evaluate`` and the walk-forward protocol
find it beside the meta-parameters, like the PPO baseline in ``ppo/``: a checkpoint file
(``agents.checkpoint``: atomic write, sha256 checked on load, ``CheckpointError`` for a
changed or damaged file) carrying the run's id, so a start left by a replaced run is refused.
"""

from __future__ import annotations

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


def pretrained_for_run(
    cfg: RunConfig,
    family: Any,
    policy: Policy,
    console: Any,
    *,
    resume: bool,
    run_id: str | None,
) -> dict[str, torch.Tensor] | None:
    """With the exact estimator and ``pretrained`` among ``evaluation.baselines``, the fair
    "pretrained" start of a run (``train_pretrained``), saved in the run directory where
    ``evaluate`` finds it (a resumed run reuses a saved one); ``metatrade meta-train`` and
    the demo call it after meta-training. None otherwise (the sampled estimator's pretrained
    start is the PPO baseline)."""
    if cfg.meta.estimator != "exact" or "pretrained" not in cfg.evaluation.baselines:
        return None
    if resume and (saved := load_pretrained(cfg.run_dir(), run_id=run_id)) is not None:
        console.print("pretrained start on the exact objective: loaded from the run")
        return saved
    t0 = time.perf_counter()
    out = train_pretrained(cfg, family, policy)
    path = save_pretrained(cfg.run_dir(), out["params"], run_id=run_id)
    console.print(
        f"pretrained start on the exact objective: {out['steps']} Adam steps (MAML's gradient "
        f"evaluations), {time.perf_counter() - t0:.0f} s -> {path}"
    )
    return out["params"]
