"""metatrade.training: the Trainer (standard RL and MAML meta-training), the run
configuration, checkpoints and logging.

Example:
    >>> from metatrade.training import Trainer, load_config, make_family   # doctest: +SKIP
    >>> cfg = load_config("tiny")                                           # doctest: +SKIP
    >>> trainer = Trainer(make_family(cfg), None, config=cfg, run_dir="runs/tiny")  # doctest: +SKIP
    >>> trainer.meta_train(num_meta_iterations=4, num_inner_loop_steps=1,
    ...                    num_evaluation_steps=2, meta_batch_size=2)       # doctest: +SKIP
"""

from metatrade.training.build import make_family, make_policy_for
from metatrade.training.checkpoint import load_run_checkpoint, resolve_checkpoint
from metatrade.training.config import ConfigError, RunConfig, load_config, save_config
from metatrade.training.task_sets import make_loader
from metatrade.training.trainer import Trainer

__all__ = [
    "ConfigError",
    "RunConfig",
    "Trainer",
    "load_config",
    "load_run_checkpoint",
    "make_family",
    "make_loader",
    "make_policy_for",
    "resolve_checkpoint",
    "save_config",
]
