"""The exact estimator's fair "pretrained" start, as a run artefact.

A multi-task policy trained on the same exact objective as MAML over all training tasks,
with MAML's budget of gradient evaluations (``metatrade.meta.pretrain``). It is saved in the
run directory (``pretrained/params.pt``, atomically) so that ``evaluate`` and the
walk-forward protocol find it beside the meta-parameters, like the PPO baseline in ``ppo/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from metatrade.io import atomic_write
from metatrade.training.config import RunConfig

PRETRAINED_FILE = Path("pretrained") / "params.pt"


def train_pretrained(cfg: RunConfig, family: Any, policy: torch.nn.Module) -> dict[str, Any]:
    """Adam on the mean exact objective for ``num_meta_iterations x (K + 1)`` steps from a
    fresh initialisation of ``policy``'s architecture (seeded from ``run.seed``)."""
    from metatrade.evaluation.protocol import random_start
    from metatrade.meta.pretrain import gradient_evaluations_per_iteration, pretrain_on_objective
    from metatrade.training.build import make_meta_config

    meta = make_meta_config(cfg)
    fresh = random_start(policy, seed=cfg.run.seed + 104_729).policy
    steps = cfg.meta.num_meta_iterations * gradient_evaluations_per_iteration(meta)
    rng = np.random.default_rng([cfg.run.seed, 104_729])
    params, losses = pretrain_on_objective(fresh, family, config=meta, num_steps=steps, rng=rng)
    return {"params": params, "losses": losses, "steps": steps}


def save_pretrained(run_dir: str | Path, params: dict[str, torch.Tensor]) -> Path:
    """Write the start's parameters to ``<run_dir>/pretrained/params.pt`` (atomically)."""
    cpu = {k: v.detach().cpu() for k, v in params.items()}
    return atomic_write(Path(run_dir) / PRETRAINED_FILE, lambda f: torch.save(cpu, f), binary=True)


def load_pretrained(run_dir: str | Path) -> dict[str, torch.Tensor] | None:
    """The run's saved pretrained start, or None when it has none."""
    path = Path(run_dir) / PRETRAINED_FILE
    return torch.load(path, weights_only=True) if path.is_file() else None
