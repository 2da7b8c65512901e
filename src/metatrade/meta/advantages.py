"""Advantage estimation: GAE, discounted returns, normalisation, the linear feature baseline.

All functions take time on the LAST axis (shapes ``[..., H]``), so the same code serves a
single trajectory ``[H]``, a PPO buffer ``[N, H]`` and a meta-batch ``[T, E, H]``.

Terminated and truncated are kept apart (Gymnasium semantics): a terminated step has no
future (``V(s_{t+1}) = 0``); a truncated step was cut for a reason outside the MDP, so
GAE bootstraps from the value of the final observation. Either way propagation stops at
the end of the episode (``dones = terminated | truncated``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from metatrade.meta.episodes import Episodes


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    dones: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016, eq. 16).

    Args:
        rewards: r_t, shape [..., H].
        values: V(s_t), shape [..., H].
        next_values: V(s_{t+1}), shape [..., H]; at a step that ended by truncation this is
            V(final obs) (bootstrap). Its value at terminated steps is ignored.
        terminated: bool/0-1 [..., H]; True where s_{t+1} is terminal (no bootstrap).
        dones: bool/0-1 [..., H]; terminated | truncated: the recursion does not cross it.
        gamma: discount factor.
        lam: GAE lambda (1.0 gives Monte-Carlo return minus baseline, as in MAML).

    Returns:
        (advantages, returns), both [..., H], with returns = advantages + values (the
        lambda-return, the usual value-function target). Steps after an episode's end get
        whatever the padding implies; mask them downstream.
    """
    not_term = 1.0 - terminated.to(rewards.dtype)
    not_done = 1.0 - dones.to(rewards.dtype)
    deltas = rewards + gamma * not_term * next_values - values  # TD residuals delta_t
    coef = gamma * lam * not_done
    horizon = rewards.shape[-1]
    adv = torch.empty_like(deltas)
    last = torch.zeros_like(deltas[..., 0])
    for t in reversed(range(horizon)):  # A_t = delta_t + gamma*lam*(1-done_t)*A_{t+1}
        last = deltas[..., t] + coef[..., t] * last
        adv[..., t] = last
    return adv, adv + values


def discounted_returns(rewards: Tensor, dones: Tensor, gamma: float) -> Tensor:
    """Monte-Carlo returns-to-go G_t = sum_k gamma^k r_{t+k} within each episode, [..., H].

    No bootstrap: this is the regression target of the linear baseline (rllab/MAML).
    """
    not_done = 1.0 - dones.to(rewards.dtype)
    out = torch.empty_like(rewards)
    last = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        last = rewards[..., t] + gamma * not_done[..., t] * last
        out[..., t] = last
    return out


def normalize(
    adv: Tensor,
    mask: Tensor | None = None,
    dim: int | tuple[int, ...] | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """(adv - mean) / (std + eps) over the valid (mask = 1) entries, zero at padding.

    ``dim`` chooses the reduction axes (None: all; ``(-2, -1)`` on [T, E, H] normalises per
    task, as pytorch-maml-rl does). Safe for a batch of one: the population std (not the
    unbiased one, which divides by n - 1 = 0) of a single entry is 0, so the result is 0,
    never NaN.
    """
    if mask is None:
        mask = torch.ones_like(adv)
    mask = mask.to(adv.dtype)
    dims = tuple(range(adv.dim())) if dim is None else dim
    count = mask.sum(dim=dims, keepdim=True).clamp_min(1.0)
    mean = (adv * mask).sum(dim=dims, keepdim=True) / count
    var = ((adv - mean).pow(2) * mask).sum(dim=dims, keepdim=True) / count
    return (adv - mean) / (var.sqrt() + eps) * mask


class LinearFeatureBaseline:
    """The rllab / MAML linear value baseline, fitted per task in closed form.

    Features of an observation at time t: ``[obs, obs^2, s, s^2, s^3, 1]`` with
    ``s = t / time_scale`` (rllab's constant 100, equal to the 2D-navigation horizon), all
    zero at padded steps. With ``obs_dims`` set, only the LAST ``obs_dims`` entries of the
    observation enter the features: the ridge solve is cubic in the feature count, so a wide
    observation (a trading window of 32 bars x 22 features + the account) would dominate a
    meta-iteration; its latest bar and the account state (the trailing entries) carry most of
    what the value depends on. Weights solve the ridge-regularised normal equations
    ``(X^T X + reg I) w = X^T G`` for every task at once (``torch.linalg.solve`` on a
    [T, F, F] batch); if a task's system is singular the ridge is multiplied by 10 (up to
    5 times), as in rllab.

    Usage::

        baseline = LinearFeatureBaseline()
        baseline.fit(obs, returns, mask)          # obs [T, E, H, D], returns/mask [T, E, H]
        values = baseline.predict(obs, mask)      # [T, E, H]
    """

    def __init__(
        self, reg_coeff: float = 1e-5, time_scale: float = 100.0, obs_dims: int | None = None
    ) -> None:
        if obs_dims is not None and obs_dims < 1:
            raise ValueError(
                f"LinearFeatureBaseline(obs_dims={obs_dims}): use a positive count of trailing "
                "observation entries, or None for all of them."
            )
        self.reg_coeff = reg_coeff
        self.time_scale = time_scale
        self.obs_dims = obs_dims
        self.weights: Tensor | None = None  # [T, F]

    def features(self, obs: Tensor, mask: Tensor, t0: Tensor | None = None) -> Tensor:
        """Features [T, E, H, 2D' + 4] (D' = ``obs_dims`` or D); ``t0`` (optional, [T, E])
        offsets the time index."""
        if self.obs_dims is not None:
            obs = obs[..., -self.obs_dims :]
        horizon = obs.shape[-2]
        t = torch.arange(horizon, dtype=obs.dtype, device=obs.device)
        t = t.expand(obs.shape[:-1])
        if t0 is not None:
            t = t + t0.to(obs.dtype).unsqueeze(-1)
        s = (t / self.time_scale).unsqueeze(-1)
        o = obs.clamp(-10.0, 10.0)  # rllab clips observations before squaring
        feats = torch.cat([o, o * o, s, s * s, s * s * s, torch.ones_like(s)], dim=-1)
        return feats * mask.to(obs.dtype).unsqueeze(-1)

    def fit(self, obs: Tensor, returns: Tensor, mask: Tensor) -> LinearFeatureBaseline:
        """Fit one weight vector per task (leading axis) on obs [T, E, H, D], returns [T, E, H]."""
        with torch.no_grad():
            feats = self.features(obs, mask)
            num_tasks, num_feats = feats.shape[0], feats.shape[-1]
            x = feats.reshape(num_tasks, -1, num_feats)
            y = (returns * mask.to(returns.dtype)).reshape(num_tasks, -1, 1)
            xtx = x.transpose(1, 2) @ x
            xty = x.transpose(1, 2) @ y
            eye = torch.eye(num_feats, dtype=x.dtype, device=x.device)
            reg = self.reg_coeff
            weights = torch.full(
                (num_tasks, num_feats, 1), float("nan"), dtype=x.dtype, device=x.device
            )
            for _ in range(5):
                sol, info = torch.linalg.solve_ex(xtx + reg * eye, xty)
                ok = (info == 0) & torch.isfinite(sol).all(dim=(1, 2))
                weights = torch.where(ok[:, None, None] & ~torch.isfinite(weights), sol, weights)
                if bool(torch.isfinite(weights).all()):
                    break
                reg *= 10.0
            self.weights = torch.nan_to_num(weights.squeeze(-1), nan=0.0)
        return self

    def predict(self, obs: Tensor, mask: Tensor, t0: Tensor | None = None) -> Tensor:
        """V(s) for obs [T, E, H, D] -> [T, E, H] (zero at padded steps)."""
        if self.weights is None:
            raise RuntimeError(
                "LinearFeatureBaseline.predict called before fit(obs, returns, mask)."
            )
        feats = self.features(obs, mask, t0)
        return torch.einsum("t...f,tf->t...", feats, self.weights.to(feats.dtype))


def compute_advantages(
    episodes: Episodes,
    gamma: float,
    gae_lambda: float,
    baseline: LinearFeatureBaseline | None = None,
    normalize_advantages: bool = True,
    baseline_obs_dims: int | None = None,
) -> Episodes:
    """Fit the baseline on ``episodes`` (per task), then GAE; returns a copy with
    ``values``, ``advantages`` (normalised per task if asked) and ``returns`` set.

    ``baseline_obs_dims``: the default baseline's features use only the last that many
    observation entries (``LinearFeatureBaseline.obs_dims``; ignored when ``baseline`` is given).

    ``next_values`` is V(s_{t+1}) inside an episode and V(last_obs) at its last step, so a
    truncated episode is bootstrapped and a terminated one is not (``terminated`` zeroes it).
    """
    if baseline is None:
        baseline = LinearFeatureBaseline(obs_dims=baseline_obs_dims)
    with torch.no_grad():
        mask = episodes.mask
        dones = episodes.dones
        mc_returns = discounted_returns(episodes.rewards, dones, gamma)
        baseline.fit(episodes.obs, mc_returns, mask)
        values = baseline.predict(episodes.obs, mask)
        last_values = baseline.predict(
            episodes.last_obs.unsqueeze(-2), torch.ones_like(mask[..., :1]), t0=episodes.lengths
        ).squeeze(-1)
        steps = torch.arange(episodes.horizon, device=mask.device)
        is_last = steps == (episodes.lengths - 1).unsqueeze(-1)
        shifted = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
        next_values = torch.where(is_last, last_values.unsqueeze(-1), shifted)
        adv, returns = gae(
            episodes.rewards, values, next_values, episodes.terminated, dones, gamma, gae_lambda
        )
        adv = adv * mask
        if normalize_advantages:
            adv = normalize(adv, mask, dim=(-2, -1))
    return episodes.replace(values=values, advantages=adv, returns=returns * mask)
