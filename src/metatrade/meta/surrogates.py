"""Policy-gradient surrogate losses whose gradients (and, for `dice`, Hessians) estimate
those of the expected return.

All take ``(policy, params, episodes)`` and return a scalar loss (minus the surrogate
objective), averaged over valid steps: ``-sum(w * mask * x) / sum(w * mask)`` with episode
weights w (uniform by default). They recompute log-probabilities from the stored
(obs, actions), never mutate anything and contain no Python branching on values, so they
run under ``torch.func.grad`` / ``vmap`` (one task per vmapped call: [E, H, ...]).

The three inner-loop estimators differ in what their *second* derivative contains
(Rothfuss et al., 2019, "ProMP", sec. 4-5; Foerster et al., 2018, "DiCE"):

* ``vpg``: ``-E[log pi(a_t|s_t) A_t]`` (Finn et al., 2017). Right gradient, but its Hessian
  misses the term that comes from the pre-update samples depending on theta.
* ``dice``: ``E[sum_t gamma^t (box(W_t) r_t + (box(W_{t-1}) - box(W_t)) b_t)]`` with
  W_t = sum_{t'<=t} log pi(a_t'|s_t') and box(x) = exp(x - stop_grad(x)); the baseline b
  follows Mao et al. (2019). Unbiased derivatives of every order.
* ``lvc``: ``E[pi(a_t|s_t) / stop_grad(pi_old(a_t|s_t)) A_t]`` with the behaviour
  log-probs. Same gradient at theta_old; its Hessian keeps the same-step outer-product
  term and drops the cross-time ones (low variance, small bias).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metatrade.meta.distributions import distribution_of
from metatrade.meta.episodes import Episodes

Params = dict[str, Tensor]
Surrogate = Callable[[nn.Module, Params, Episodes], Tensor]


def log_probs(policy: nn.Module, params: Params, episodes: Episodes) -> Tensor:
    """log pi_params(a_t|s_t) recomputed differentiably [..., H]."""
    dist_params = functional_call(policy, params, (episodes.obs,))
    return distribution_of(policy).log_prob(dist_params, episodes.actions)


def step_weights(episodes: Episodes) -> Tensor:
    """w * mask per step [..., E, H]: episode weights (uniform by default) on valid steps."""
    w = episodes.mask
    if episodes.weights is not None:
        w = w * episodes.weights.unsqueeze(-1)
    return w


def weighted_mean(x: Tensor, episodes: Episodes) -> Tensor:
    """sum(w * mask * x) / sum(w * mask) over episodes and steps."""
    w = step_weights(episodes)
    return (x * w).sum() / w.sum()


def magic_box(x: Tensor) -> Tensor:
    """DiCE's box operator: value 1, derivative d box(x) = box(x) dx (Foerster et al., 2018)."""
    return torch.exp(x - x.detach())


def _require_advantages(episodes: Episodes, name: str) -> Tensor:
    if episodes.advantages is None:
        raise ValueError(
            f"surrogate '{name}' needs episodes.advantages; run "
            "metatrade.meta.advantages.compute_advantages(episodes, gamma, gae_lambda) first."
        )
    return episodes.advantages


def vpg_loss(policy: nn.Module, params: Params, episodes: Episodes) -> Tensor:
    """REINFORCE surrogate -E[log pi(a|s) A] (MAML's inner loss)."""
    adv = _require_advantages(episodes, "vpg")
    return -weighted_mean(log_probs(policy, params, episodes) * adv, episodes)


def lvc_loss(policy: nn.Module, params: Params, episodes: Episodes) -> Tensor:
    """ProMP's low-variance curvature surrogate -E[pi/pi_old * A] (ProMP eq. 9)."""
    adv = _require_advantages(episodes, "lvc")
    ratio = torch.exp(log_probs(policy, params, episodes) - episodes.log_probs.detach())
    return -weighted_mean(ratio * adv, episodes)


def dice_loss(policy: nn.Module, params: Params, episodes: Episodes, gamma: float = 0.99) -> Tensor:
    """DiCE surrogate with the Mao et al. (2019) baseline; value = -(mean discounted reward)."""
    logp = log_probs(policy, params, episodes) * episodes.mask
    cum = torch.cumsum(logp, dim=-1)  # W_t
    box = magic_box(cum)
    box_prev = torch.cat([torch.ones_like(box[..., :1]), box[..., :-1]], dim=-1)
    steps = torch.arange(episodes.rewards.shape[-1], dtype=logp.dtype, device=logp.device)
    discount = gamma**steps
    x = box * episodes.rewards
    if episodes.values is not None:
        x = x + (box_prev - box) * episodes.values.detach()
    return -weighted_mean(discount * x, episodes)


def ratio_loss_from_dist(distribution: Any, dist_params: Tensor, episodes: Episodes) -> Tensor:
    """-E[pi/pi_behaviour * A] given pi's distribution parameters on ``episodes.obs`` (the
    outer surrogate; TRPO computes the parameters once for its loss and its KL)."""
    adv = _require_advantages(episodes, "ratio")
    logp = distribution.log_prob(dist_params, episodes.actions)
    ratio = torch.exp(logp - episodes.log_probs.detach())
    return -weighted_mean(ratio * adv, episodes)


def ratio_loss(policy: nn.Module, params: Params, episodes: Episodes) -> Tensor:
    """Outer surrogate -E[pi/pi_behaviour * A] on post-update episodes (lvc's form)."""
    dist_params = functional_call(policy, params, (episodes.obs,))
    return ratio_loss_from_dist(policy.distribution, dist_params, episodes)


def get_surrogate(name: str | Surrogate, gamma: float = 0.99) -> Surrogate:
    """Look up an inner surrogate by name ("vpg", "dice", "lvc"), or pass a callable through."""
    if callable(name):
        return name
    table: dict[str, Surrogate] = {
        "vpg": vpg_loss,
        "lvc": lvc_loss,
        "dice": partial(dice_loss, gamma=gamma),
    }
    if name not in table:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(table)}.")
    return table[name]
