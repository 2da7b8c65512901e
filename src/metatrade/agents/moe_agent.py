"""Mixture-of-experts agent and its regime report: which expert leads in which market regime.

The agent is PPO on the ``"moe"`` policy (``metatrade.agents.policies.MoEPolicy``); the same
policy can be meta-trained by MAML (``MAMLAgent`` with ``policy_kind="moe"``), and
``regime_report`` works on either, since it only needs the policy's ``gate_weights``.

Regimes are labelled from causal features with a simple rule: a bar is *trend* if the
absolute longer-horizon return (default ``logret_24``) is above its median over the rows
being reported, else *range*; *high_vol* if the volatility feature (default ``rvol_48``) is
above its median, else *low_vol*. The medians are taken over the reported sample (a
description of that sample, not a trading signal), the features themselves use bars
``0..t`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from metatrade.agents.policies import MoEPolicy
from metatrade.agents.ppo import PPOAgent

REGIMES = ("trend/high_vol", "trend/low_vol", "range/high_vol", "range/low_vol")


def regime_labels(
    features: np.ndarray,
    feature_names: Sequence[str],
    trend_feature: str = "logret_24",
    vol_feature: str = "rvol_48",
) -> np.ndarray:
    """Label each row of ``features`` [N, F] with one of ``REGIMES`` -> str array [N].

    Trend: |trend_feature| above its median; high vol: vol_feature above its median.
    """
    names = list(feature_names)
    for name in (trend_feature, vol_feature):
        if name not in names:
            raise ValueError(
                f"regime_labels: feature {name!r} is not among the feature names {names}; "
                "pass trend_feature= / vol_feature= naming columns that exist"
            )
    trend_col = np.abs(features[:, names.index(trend_feature)])
    vol_col = features[:, names.index(vol_feature)]
    trend = trend_col > np.median(trend_col)
    high_vol = vol_col > np.median(vol_col)
    return np.where(
        trend,
        np.where(high_vol, REGIMES[0], REGIMES[1]),
        np.where(high_vol, REGIMES[2], REGIMES[3]),
    )


def flat_observations(
    features: np.ndarray, rows: np.ndarray, lookback: int, account_dim: int
) -> np.ndarray:
    """Observations [N, lookback*F + account_dim] for bars ``rows`` as a trading env shows them
    while flat (window of feature rows ``t-L+1..t``, oldest first; account values all zero).

    Every row must have ``lookback - 1`` rows before it.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and rows.min() < lookback - 1:
        raise ValueError(
            f"flat_observations: row {int(rows.min())} has fewer than lookback-1={lookback - 1} "
            "rows before it; start the rows at lookback-1"
        )
    idx = rows[:, None] + np.arange(-lookback + 1, 1)[None, :]  # [N, L]
    window = features[idx].reshape(len(rows), -1)
    account = np.zeros((len(rows), account_dim), dtype=window.dtype)
    return np.concatenate([window, account], axis=1).astype(np.float32)


def regime_report(policy: MoEPolicy, obs_batch: np.ndarray, regimes: np.ndarray) -> pd.DataFrame:
    """How often each expert leads (has the largest gate weight) in each regime.

    Args:
        policy: a mixture-of-experts policy (anything with ``gate_weights``).
        obs_batch: observations [N, obs_dim].
        regimes: one label per observation [N] (e.g. from ``regime_labels``).

    Returns:
        A DataFrame indexed by regime (plus an ``all`` row) with columns ``n`` (rows),
        ``lead_k`` (share of rows where expert k leads, summing to 1), ``gate_k`` (mean gate
        weight of expert k) and ``top_expert``.
    """
    obs_batch = np.asarray(obs_batch, dtype=np.float32)
    regimes = np.asarray(regimes)
    if len(obs_batch) != len(regimes):
        raise ValueError(
            f"regime_report: {len(obs_batch)} observations but {len(regimes)} regime labels; "
            "pass one label per observation row"
        )
    dtype = next(policy.parameters()).dtype
    with torch.no_grad():
        gates = policy.gate_weights(torch.as_tensor(obs_batch, dtype=dtype)).cpu().numpy()
    k = gates.shape[-1]
    leader = gates.argmax(-1)
    rows = []
    labels = [r for r in REGIMES if r in set(regimes.tolist())]
    labels += sorted(set(regimes.tolist()) - set(labels))
    for label in [*labels, "all"]:
        sel = np.ones(len(regimes), bool) if label == "all" else regimes == label
        lead = np.bincount(leader[sel], minlength=k) / max(int(sel.sum()), 1)
        row = {"regime": label, "n": int(sel.sum())}
        row.update({f"lead_{i}": float(lead[i]) for i in range(k)})
        row.update({f"gate_{i}": float(gates[sel, i].mean()) for i in range(k)})
        row["top_expert"] = int(lead.argmax())
        rows.append(row)
    return pd.DataFrame(rows).set_index("regime")


class MoEAgent(PPOAgent):
    """PPO on a mixture-of-experts policy, with gate inspection and a regime report.

    Same arguments as ``PPOAgent``; ``config.kind`` is forced to ``"moe"``.

    Example:
        >>> agent = MoEAgent.from_env(batch_env, PPOConfig(num_experts=4))   # doctest: +SKIP
        >>> agent.learn(batch_env, 100_000)                                   # doctest: +SKIP
        >>> print(agent.regime_report(obs, regime_labels(feats, names)))      # doctest: +SKIP
    """

    forced_policy_kind = "moe"
    policy: MoEPolicy  # what forced_policy_kind builds

    def gate_weights(self, obs: np.ndarray) -> np.ndarray:
        """Gate weights [..., K] for observations [..., obs_dim]."""
        dtype = next(self.policy.parameters()).dtype
        with torch.no_grad():
            out = self.policy.gate_weights(torch.as_tensor(np.asarray(obs), dtype=dtype))
        return out.cpu().numpy()

    def regime_report(self, obs_batch: np.ndarray, regimes: np.ndarray) -> pd.DataFrame:
        """See ``regime_report``."""
        return regime_report(self.policy, obs_batch, regimes)
