"""Walk-forward meta-test (issue 14): re-adapt each start on the recent past before every
fold, trade the fold in the ledger, stitch the out-of-sample record, score it.

See docs/evaluation.md ("Walk-forward protocol") and the module docstrings: ``folds``
(geometry and normalisation), ``adapters`` (the pluggable inner loop), ``ledger``
(carry / flatten accounts), ``stats`` (PSR, DSR, break-even, bootstrap), ``evaluate``
(per task and pooled), ``report`` (HTML, CSV, JSON), ``signal`` (the next decision).
"""

from metatrade.evaluation.walkforward.adapters import Adapter, InnerLoopAdapter, adaptation_seed
from metatrade.evaluation.walkforward.evaluate import WalkForwardResult, run_walkforward
from metatrade.evaluation.walkforward.folds import (
    Fold,
    FoldSpec,
    WalkForwardTask,
    cut_after,
    fold_arrays,
    live_fold,
    load_tasks,
    make_folds,
    prepare_task,
)
from metatrade.evaluation.walkforward.runner import WalkForwardConfig

__all__ = [
    "Adapter",
    "Fold",
    "FoldSpec",
    "InnerLoopAdapter",
    "WalkForwardConfig",
    "WalkForwardResult",
    "WalkForwardTask",
    "adaptation_seed",
    "cut_after",
    "fold_arrays",
    "live_fold",
    "load_tasks",
    "make_folds",
    "prepare_task",
    "run_walkforward",
]
