"""metatrade.data: OHLCV files -> validated bars -> causal features, task sampling, splits.

Public entry points: ``DataLoader`` (tasks, bars, ``TaskArrays``), ``SplitConfig``/``HeldOut``,
``validate_folder``/``DataValidationError``, ``build_task_arrays``/``raw_features`` (the
feature pipeline), the synthetic AR(1) task family and the regime family of six kinds
(``RegimesConfig``, ``write_regime_tasks``, ``TaskRule``).
"""

from metatrade.data.features import FEATURE_NAMES, build_task_arrays, raw_features
from metatrade.data.loader import DataLoader
from metatrade.data.regimes import RegimesConfig, TaskRule, load_task_rules, write_regime_tasks
from metatrade.data.splits import HeldOut, SplitConfig
from metatrade.data.synthetic import RegimeParams, oracle_positions, write_synthetic_tasks
from metatrade.data.task_arrays import TaskArrays, TaskId
from metatrade.data.validation import DataValidationError, Problem, validate_folder

__all__ = [
    "FEATURE_NAMES",
    "DataLoader",
    "DataValidationError",
    "HeldOut",
    "Problem",
    "RegimeParams",
    "RegimesConfig",
    "SplitConfig",
    "TaskArrays",
    "TaskId",
    "TaskRule",
    "build_task_arrays",
    "load_task_rules",
    "raw_features",
    "oracle_positions",
    "validate_folder",
    "write_regime_tasks",
    "write_synthetic_tasks",
]
