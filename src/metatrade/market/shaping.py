"""The shaping terms of ``RewardShaping`` added to the P&L reward, for every slot of a
``BatchTradingEnv`` at once (``TradingEnv._shaped_reward`` adds the same terms to one
episode, in the same order of float operations)."""

from __future__ import annotations

import numpy as np

from metatrade.market.config import RewardShaping


def shaped_rewards(
    shaping: RewardShaping,
    pnl_reward: np.ndarray,
    *,
    position: np.ndarray,
    unreal: np.ndarray,
    invalid: np.ndarray,
    agent_win: np.ndarray,
    equity: np.ndarray,
    peak: np.ndarray,
) -> np.ndarray:
    """``pnl_reward`` [N] minus the invalid-action and losing-hold penalties, plus the winning
    close bonus, minus the drawdown penalty (``RewardShaping``'s formula); ``peak`` [N] is
    raised to ``equity`` in place first (the running peak of each episode)."""
    reward = pnl_reward
    if shaping.invalid_action_penalty:
        reward = np.where(invalid, reward - shaping.invalid_action_penalty, reward)
    if shaping.losing_hold_penalty:
        losing = (position != 0) & (unreal < 0.0)  # an open position with unrealised loss
        reward = np.where(losing, reward - shaping.losing_hold_penalty, reward)
    if shaping.winning_close_bonus:
        reward = np.where(agent_win, reward + shaping.winning_close_bonus, reward)
    np.maximum(peak, equity, out=peak)
    if shaping.drawdown_penalty:
        reward = reward - shaping.drawdown_penalty * (1.0 - equity / peak)
    return reward
