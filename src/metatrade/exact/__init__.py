"""metatrade.exact: trading's differentiable objective, the exact expected P&L of a policy.

A layer below ``metatrade.market`` (the same trading MDP, evaluated by a recursion over the
position instead of by sampling; it reads the market's rules, costs and env config, and the
market never imports it) that knows nothing of MAML: it offers a per-task loss of
parameters on a batch of windows, which the meta-learning core can ``vmap`` over tasks like
a sampled surrogate on ``Episodes``. See docs/exact.md.
"""

from __future__ import annotations

from metatrade.exact.objective import (
    POSITIONS,
    exact_loss,
    expected_pnl,
    pnl_moments,
    position_recursion,
    recursion_from_probs,
)
from metatrade.exact.settings import ObjectiveSettings
from metatrade.exact.windows import (
    PnlWindows,
    build_windows,
    causal_volatility,
    consecutive_windows,
    sample_window_pairs,
    window_quantity,
    windows_before,
)
from metatrade.market.sizing import FixedUnitsSizer  # the exactness setting of the ledger

__all__ = [
    "POSITIONS",
    "FixedUnitsSizer",
    "ObjectiveSettings",
    "PnlWindows",
    "build_windows",
    "causal_volatility",
    "consecutive_windows",
    "exact_loss",
    "expected_pnl",
    "pnl_moments",
    "position_recursion",
    "recursion_from_probs",
    "sample_window_pairs",
    "window_quantity",
    "windows_before",
]
