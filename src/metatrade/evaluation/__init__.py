"""metatrade.evaluation: metrics, backtests and their report, bootstrap intervals, the
meta-test protocol and plots. See docs/evaluation.md."""

from metatrade.evaluation.backtest import (
    BacktestResult,
    PositionRule,
    buy_and_hold,
    fixed_positions,
    flat,
    run_backtest,
    run_backtest_pair,
)
from metatrade.evaluation.baselines import AdaptiveRule, ClassicalConfig, fit_classical
from metatrade.evaluation.bootstrap import (
    ConfidenceInterval,
    bootstrap_ci,
    hierarchical_bootstrap_ci,
)
from metatrade.evaluation.metrics import compute_metrics
from metatrade.evaluation.plots import plot_adaptation_curve, plot_equity_curve
from metatrade.evaluation.protocol import (
    EvaluationResult,
    MetaTestProtocol,
    ProtocolConfig,
    Start,
    module_params,
    random_start,
)
from metatrade.evaluation.report import (
    backtest_and_report,
    format_backtest_report,
    run_backtest_and_report,
)

__all__ = [
    "AdaptiveRule",
    "BacktestResult",
    "ClassicalConfig",
    "ConfidenceInterval",
    "EvaluationResult",
    "MetaTestProtocol",
    "PositionRule",
    "ProtocolConfig",
    "Start",
    "backtest_and_report",
    "bootstrap_ci",
    "buy_and_hold",
    "compute_metrics",
    "fit_classical",
    "fixed_positions",
    "flat",
    "format_backtest_report",
    "hierarchical_bootstrap_ci",
    "module_params",
    "plot_adaptation_curve",
    "plot_equity_curve",
    "random_start",
    "run_backtest",
    "run_backtest_and_report",
    "run_backtest_pair",
]
